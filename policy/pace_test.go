package policy

import (
	"testing"
	"time"
)

func TestCompileWait(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct{ took, since, want time.Duration }{
		{2 * ms, 0, 20 * ms},              // a small fabric under churn
		{2 * ms, 50 * ms, 0},              // after a quiet spell: at once
		{200 * ms, 500 * ms, 1500 * ms},   // a large one, paced
		{time.Second, 0, MaxCompileWait},  // never more than the bound
		{time.Second, 3 * time.Second, 0}, // however slow the compile
	} {
		if got := CompileWait(c.took, c.since); got != c.want {
			t.Errorf("CompileWait(%v, %v) = %v, want %v", c.took, c.since, got, c.want)
		}
	}
}

func TestNewsWait(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct{ took, since, want time.Duration }{
		{2 * ms, 0, 2 * ms},                  // a burst: once the compile's cost
		{200 * ms, 50 * ms, 150 * ms},        // at most half a core
		{2 * ms, 50 * ms, 0},                 // after a quiet spell: at once
		{3 * time.Second, 0, MaxCompileWait}, // never more than the bound
	} {
		if got := NewsWait(c.took, c.since); got != c.want {
			t.Errorf("NewsWait(%v, %v) = %v, want %v", c.took, c.since, got, c.want)
		}
		if got := CompileWait(c.took, c.since); got < NewsWait(c.took, c.since) {
			t.Errorf("CompileWait(%v, %v) = %v, sooner than news waits", c.took, c.since, got)
		}
	}
}
