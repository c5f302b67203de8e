package kubesource

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/loomnet/loom/policy"
)

// TestViewWriterSkipsRepeats: a view equal to the last one written (what
// a pod status update that changes nothing policies read produces) is not
// written again; a different one is.
func TestViewWriterSkipsRepeats(t *testing.T) {
	var out bytes.Buffer
	vw := &viewWriter{w: &out}
	pod := policy.Pod{Namespace: "x", Name: "a", IP: netip.MustParseAddr("10.244.0.10"), Labels: map[string]string{"pod": "a"}}
	v := policy.NewClusterView(nil, nil, []policy.Pod{pod})
	for i, want := range []bool{true, false} {
		wrote, err := vw.write(v)
		if err != nil || wrote != want {
			t.Fatalf("write %d = %v, %v; want %v", i, wrote, err, want)
		}
	}
	pod.Labels = map[string]string{"pod": "b"}
	if wrote, err := vw.write(policy.NewClusterView(nil, nil, []policy.Pod{pod})); err != nil || !wrote {
		t.Fatalf("changed view written = %v, %v", wrote, err)
	}
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("%d views written, want 2:\n%s", n, out.String())
	}
}
