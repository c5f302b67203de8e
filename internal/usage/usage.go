// Package usage holds the exit-code rule Loom's commands share: 2 when the
// command line is wrong, 1 when the work itself failed. The two are told
// apart by type, not by the words of an error, so that a kernel's EINVAL
// ("invalid argument") at run time never reads as a bad flag.
package usage

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Error is a mistake in how a command was called.
type Error struct{ Err error }

func (e Error) Error() string { return e.Err.Error() }

// Unwrap returns the complaint itself.
func (e Error) Unwrap() error { return e.Err }

// Errorf formats a usage error.
func Errorf(format string, a ...any) error { return Error{fmt.Errorf(format, a...)} }

// Is reports whether err is, or wraps, a usage error.
func Is(err error) bool {
	var ue Error
	return errors.As(err, &ue)
}

// Mark makes every complaint cobra has about a command line under root a
// usage error: a flag it cannot parse, positional arguments a command's
// Args refuses, a subcommand that does not exist. A command that only
// groups others shows its help when called alone, and refuses anything
// else: cobra's own default would print the help and exit 0 for
// `loomctl keyring instal KEY`, hiding the typo from a script. `help`
// refuses a topic that names no command in the same way. Call Mark once
// the tree is complete.
func Mark(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Error{err} })
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			c.Run, c.RunE = nil, helpTopic
		}
	}
	mark(root)
}

// helpTopic shows the help of the command args name. Cobra's own help
// command prints "Unknown help topic" and succeeds, so `loomctl help
// stauts` would exit 0. Execute adds the help command again, but the same
// one: InitDefaultHelpCmd made it once and cobra keeps it.
func helpTopic(h *cobra.Command, args []string) error {
	c, rest, err := h.Root().Find(args)
	if err != nil || len(rest) > 0 {
		return Error{fmt.Errorf("unknown help topic %q for %q", strings.Join(args, " "), h.Root().Name())}
	}
	c.InitDefaultHelpFlag()
	return c.Help()
}

func mark(c *cobra.Command) {
	if !c.Runnable() && c.HasSubCommands() {
		c.Args = subcommandOnly
		c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
	if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return Error{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		mark(sub)
	}
}

// subcommandOnly refuses any argument left over once cobra has looked for
// a subcommand: it names none of them.
func subcommandOnly(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	err := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2 // cobra's own default, which it sets only in its own path
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		err += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return errors.New(err)
}
