package agent

import "time"

// pacer decides when the loop runs a reconcile for changes that can wait
// a little, paced by what the last reconcile cost (see policy.CompileWait):
// other nodes' pod changes, and the kicks of CNI requests, watchers and
// reloads. A burst of them (pods attached and deleted one after another)
// makes one reconcile per pace, not one each, and each costs more the
// more pods the node runs. News of pods this node's policies wait for
// (see policy.NewsWait) brings a due reconcile forward.
type pacer struct {
	// reason says why a reconcile is due ("" when none is) and at when.
	reason string
	at     time.Time
	// policyOnly says that every reason since is other nodes' pods,
	// which change only the policy: then the policy is reconciled alone.
	policyOnly bool
	// took is what the last reconcile cost and lastEnd when it ended.
	took    time.Duration
	lastEnd time.Time
}

// waitFunc is how long a change waits when the last reconcile took took
// and ended since ago.
type waitFunc func(took, since time.Duration) time.Duration

// add notes a change for why (the reason "pods" is other nodes' pods)
// that may wait as wait says. It returns how long from now the due
// reconcile is to run, and whether that moved (the timer is to be reset).
func (p *pacer) add(why string, wait waitFunc, now time.Time) (time.Duration, bool) {
	d := wait(p.took, now.Sub(p.lastEnd))
	moved := false
	if at := now.Add(d); p.reason == "" || at.Before(p.at) {
		p.at, moved = at, true
	}
	if p.reason == "" {
		p.reason, p.policyOnly = why, true
	}
	p.policyOnly = p.policyOnly && why == "pods"
	return d, moved
}

// ran notes a reconcile that ran from start to end; what was due is done.
func (p *pacer) ran(start, end time.Time) {
	p.took, p.lastEnd = end.Sub(start), end
	p.reason = ""
}
