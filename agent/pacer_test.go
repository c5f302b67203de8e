package agent

import (
	"testing"
	"time"

	"github.com/loomnet/loom/policy"
)

// Changes paced after a costly compile wait ten times its cost; news of
// a pod the node's policies wait for, arriving meanwhile, brings the
// compile forward to once its cost, and a later change never pushes it
// back.
func TestPacerNewsBringsTheCompileForward(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	var p pacer
	p.ran(t0, t0.Add(100*ms))
	step := func(why string, wait waitFunc, at, wantWait time.Duration, wantMoved bool) {
		t.Helper()
		d, moved := p.add(why, wait, t0.Add(at))
		if d != wantWait || moved != wantMoved {
			t.Fatalf("add(%s) at %v: wait %v, moved %v; want %v, %v", why, at, d, moved, wantWait, wantMoved)
		}
	}
	step("pods", policy.CompileWait, 110*ms, 990*ms, true)
	step("pods", policy.CompileWait, 150*ms, 950*ms, false)
	step("pods", policy.NewsWait, 160*ms, 40*ms, true)
	if want := t0.Add(200 * ms); !p.at.Equal(want) || p.reason != "pods" || !p.policyOnly {
		t.Fatalf("due %v for %q (policy only %v), want at %v for pods, policy only", p.at, p.reason, p.policyOnly, want)
	}
	step("change", policy.CompileWait, 170*ms, 930*ms, false)
	if p.reason != "pods" || p.policyOnly {
		t.Fatalf("after a kick: due for %q, policy only %v; want the whole reconcile", p.reason, p.policyOnly)
	}
	p.ran(t0.Add(200*ms), t0.Add(300*ms))
	if p.reason != "" {
		t.Fatalf("a reconcile ran, but %q is still due", p.reason)
	}
	// After a quiet spell anything runs at once.
	step("change", policy.CompileWait, 5*time.Second, 0, true)
}
