package usage

import (
	"bytes"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
)

// tree is a small command line like loomctl's: a group with subcommands,
// a leaf that takes one argument, and a leaf whose work fails with the
// kernel's EINVAL.
func tree(out *bytes.Buffer) *cobra.Command {
	root := &cobra.Command{Use: "tool", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().Int("count", 1, "a number")
	group := &cobra.Command{Use: "keyring", Short: "keys"}
	group.AddCommand(&cobra.Command{Use: "install KEY", Args: cobra.ExactArgs(1), RunE: func(*cobra.Command, []string) error { return nil }})
	root.AddCommand(group)
	root.AddCommand(&cobra.Command{Use: "apply", Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error {
		return fmt.Errorf("program route: %w", syscall.EINVAL)
	}})
	Mark(root)
	root.SetOut(out)
	root.SetErr(out)
	return root
}

func TestMarkTellsUsageFromFailure(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string // in the error, or in the output when there is none
	}{
		{[]string{"keyring", "install", "k"}, false, ""},
		{[]string{"keyring"}, false, "tool keyring [command]"},
		{[]string{"apply"}, false, "invalid argument"},
		{[]string{"keyring", "instal", "k"}, true, `unknown command "instal" for "tool keyring"; did you mean install?`},
		{[]string{"keyring", "install"}, true, "accepts 1 arg(s), received 0"},
		{[]string{"aply"}, true, `unknown command "aply" for "tool"; did you mean apply?`},
		{[]string{"apply", "now"}, true, `unknown command "now" for "tool apply"`},
		{[]string{"apply", "--count", "x"}, true, `invalid argument "x" for "--count"`},
		{[]string{"apply", "--nope"}, true, "unknown flag: --nope"},
		{[]string{"completion", "tcsh"}, true, `unknown command "tcsh" for "tool completion"`},
		{[]string{"help", "keyring", "install"}, false, "tool keyring install KEY"},
		{[]string{"help"}, false, "tool [command]"},
		{[]string{"help", "aply"}, true, `unknown help topic "aply" for "tool"`},
		{[]string{"help", "keyring", "instal"}, true, `unknown help topic "keyring instal" for "tool"`},
	} {
		var out bytes.Buffer
		root := tree(&out)
		root.SetArgs(tc.args)
		err := root.Execute()
		if got := Is(err); got != tc.usage {
			t.Errorf("%q: Is(%v) = %v, want %v", tc.args, err, got, tc.usage)
		}
		text := out.String()
		if err != nil {
			text = err.Error()
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%q: %q does not say %q", tc.args, text, tc.want)
		}
	}
}
