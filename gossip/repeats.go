package gossip

import (
	"sync"
	"time"
)

// repeatWindow is how long an identical warning is kept quiet: a peer
// whose updates are rejected (another --cluster-cidr, a rogue) sends them
// on every push/pull and broadcast, and one line says it all.
const repeatWindow = 10 * time.Minute

// repeats remembers which warnings were logged recently.
type repeats struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// fresh reports whether msg was not logged within repeatWindow, and
// records it as logged now if so.
func (r *repeats) fresh(msg string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.seen[msg]; ok && now.Sub(last) < repeatWindow {
		return false
	}
	if r.seen == nil || len(r.seen) >= 256 {
		// Bounded whatever a hostile peer sends: forget everything.
		r.seen = map[string]time.Time{}
	}
	r.seen[msg] = now
	return true
}
