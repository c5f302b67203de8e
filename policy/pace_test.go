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
