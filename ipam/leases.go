// Package ipam hands out pod subnets to nodes (a replicated lease table
// merged by gossip) and pod addresses inside the node's own subnet
// (persisted in a crash-safe store).
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
)

// LeaseState is the state of one node's claim on a subnet.
type LeaseState string

// Lease states. A Reserved claim still blocks the subnet (its dead owner's
// pods may come back) until it expires; a Released claim blocks nothing.
const (
	LeaseActive   LeaseState = "active"
	LeaseReserved LeaseState = "reserved"
	LeaseReleased LeaseState = "released"
)

func (s LeaseState) rank() int {
	switch s {
	case LeaseActive:
		return 1
	case LeaseReserved:
		return 2
	case LeaseReleased:
		return 3
	}
	return 0
}

// Claim is one node's claim on one subnet. The table keeps one claim per
// (subnet, owner) and merges two versions of it by taking the greater under
// a total order, so merges commute, associate and are idempotent.
type Claim struct {
	Subnet netip.Prefix `json:"subnet"`
	Owner  string       `json:"owner"`
	// Epoch is when the owner first claimed the subnet (unix nanoseconds);
	// the older claim wins a conflict.
	Epoch uint64 `json:"epoch"`
	// Version increases with every change of this claim's state.
	Version uint64     `json:"version"`
	State   LeaseState `json:"state"`
	// Expires is when a reservation lapses, or when the claim was
	// released (unix seconds); 0 when active, and on releases by agents
	// that did not record the time.
	Expires int64 `json:"expires,omitempty"`
}

// Release returns the claim's next version, released at now.
func (c Claim) Release(now time.Time) Claim {
	c.Version++
	c.State, c.Expires = LeaseReleased, now.Unix()
	return c
}

// ended reports whether the claim stopped blocking its subnet longer than
// forgetAfter before now, by the time the claim itself carries (so every
// node comes to the same answer). A released claim from an agent that did
// not record when never ends.
func (c Claim) ended(now time.Time, forgetAfter time.Duration) bool {
	switch {
	case c.State == LeaseActive, c.Expires == 0:
		return false
	case c.State == LeaseReserved && c.Expires > now.Unix():
		return false
	}
	return now.Sub(time.Unix(c.Expires, 0)) > forgetAfter
}

// newer reports whether c supersedes o (same subnet and owner).
func (c Claim) newer(o Claim) bool {
	if c.Epoch != o.Epoch {
		return c.Epoch > o.Epoch
	}
	if c.Version != o.Version {
		return c.Version > o.Version
	}
	if c.State.rank() != o.State.rank() {
		return c.State.rank() > o.State.rank()
	}
	return c.Expires > o.Expires
}

// Blocks reports whether the claim keeps others from using its subnet at now.
func (c Claim) Blocks(now time.Time) bool {
	switch c.State {
	case LeaseActive:
		return true
	case LeaseReserved:
		return c.Expires > now.Unix()
	}
	return false
}

// beats reports whether c wins a conflict against o for the same subnet.
func (c Claim) beats(o Claim) bool {
	if c.Epoch != o.Epoch {
		return c.Epoch < o.Epoch
	}
	return c.Owner < o.Owner
}

type claimKey struct {
	subnet netip.Prefix
	owner  string
}

// LeaseTable is the replicated table of subnet claims. It is safe for
// concurrent use.
type LeaseTable struct {
	space SubnetSpace

	// mu guards claims and its indexes.
	mu     sync.Mutex
	claims map[claimKey]Claim
	// owners and subnets index claims by subnet and by owner: every
	// reconcile asks who holds each peer's subnet, and scanning the whole
	// table for each of thousands of peers took most of a second.
	owners  map[netip.Prefix][]string
	subnets map[string][]netip.Prefix

	// forgetAfter is how long after a claim stopped blocking its subnet
	// (released, or its reservation lapsed) the table forgets it; 0
	// keeps every claim. Without it a fabric that replaces nodes keeps
	// a claim per node it ever had, in every push/pull.
	forgetAfter time.Duration
	// live says whether a claim's owner is this node or a live peer; nil
	// knows of no one. See SetLiveness.
	live func(owner string) bool
	now  func() time.Time
	// changes counts the Merges and Forgets that changed the table.
	changes uint64
}

// SetLiveness tells the table who is alive now: this node and its live
// peers. A reservation says its owner is gone; when the owner is alive
// after all (a partition healed, and it has not yet taken the claim
// back), the claim still holds its subnet for PickFree, and it is never
// forgotten or ignored, even though the reservation lapsed.
func (t *LeaseTable) SetLiveness(live func(owner string) bool) {
	t.mu.Lock()
	t.live = live
	t.mu.Unlock()
}

func (t *LeaseTable) ownerLive(owner string) bool { return t.live != nil && t.live(owner) }

// NewLeaseTable returns an empty table for the given subnet space. It
// keeps every claim it learns until ForgetAfter says otherwise.
func NewLeaseTable(space SubnetSpace) *LeaseTable {
	return &LeaseTable{space: space, claims: map[claimKey]Claim{},
		owners: map[netip.Prefix][]string{}, subnets: map[string][]netip.Prefix{}, now: time.Now}
}

// ForgetAfter makes the table drop claims that ended (see Forget) longer
// than d ago, and ignore such claims when a peer sends them again. d must
// exceed the longest reservation any node makes (its --lease-ttl): a node
// cut off while a claim was released reserves it meanwhile, and that
// reservation must have lapsed before the release is forgotten, or it
// would block the subnet again when the node comes back.
func (t *LeaseTable) ForgetAfter(d time.Duration) {
	t.mu.Lock()
	t.forgetAfter = d
	t.mu.Unlock()
}

// Forget drops the claims that ended longer than ForgetAfter ago, but
// not those of live owners (see SetLiveness), and returns them.
func (t *LeaseTable) Forget() []Claim {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.forgetAfter == 0 {
		return nil
	}
	now := t.now()
	var gone []Claim
	for k, c := range t.claims {
		if c.ended(now, t.forgetAfter) && !t.ownerLive(c.Owner) {
			gone = append(gone, c)
			delete(t.claims, k)
			t.owners[k.subnet] = slices.DeleteFunc(t.owners[k.subnet], func(o string) bool { return o == k.owner })
			if len(t.owners[k.subnet]) == 0 {
				delete(t.owners, k.subnet)
			}
			t.subnets[k.owner] = slices.DeleteFunc(t.subnets[k.owner], func(s netip.Prefix) bool { return s == k.subnet })
			if len(t.subnets[k.owner]) == 0 {
				delete(t.subnets, k.owner)
			}
		}
	}
	if len(gone) > 0 {
		t.changes++
	}
	return gone
}

// Changes counts the changes made to the table so far: a caller that
// keeps a copy (on disk) compares it with the count at the copy.
func (t *LeaseTable) Changes() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changes
}

// Validate checks a claim against the table's subnet space.
func (t *LeaseTable) Validate(c Claim) error {
	if err := t.space.Check(c.Subnet); err != nil {
		return err
	}
	if c.Owner == "" || len(c.Owner) > 255 {
		return fmt.Errorf("claim on %s: owner name must be 1..255 bytes", c.Subnet)
	}
	if c.State.rank() == 0 {
		return fmt.Errorf("claim on %s by %s: unknown state %q", c.Subnet, c.Owner, c.State)
	}
	return nil
}

// Merge folds claims into the table and returns those that changed it.
// Invalid claims are skipped and reported in the error; valid ones still
// merge, so one bad record never blocks the rest.
func (t *LeaseTable) Merge(claims ...Claim) ([]Claim, error) {
	var errs []error
	var changed []Claim
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range claims {
		if err := t.Validate(c); err != nil {
			errs = append(errs, err)
			continue
		}
		k := claimKey{c.Subnet, c.Owner}
		old, known := t.claims[k]
		if known && !c.newer(old) {
			continue
		}
		if !known && t.forgetAfter > 0 && c.ended(t.now(), t.forgetAfter) && !t.ownerLive(c.Owner) {
			continue // forgotten here; a peer that has not forgotten it yet sent it
		}
		if !known {
			t.owners[c.Subnet] = append(t.owners[c.Subnet], c.Owner)
			t.subnets[c.Owner] = append(t.subnets[c.Owner], c.Subnet)
		}
		t.claims[k] = c
		changed = append(changed, c)
	}
	if len(changed) > 0 {
		t.changes++
	}
	return changed, errors.Join(errs...)
}

// Claims returns every claim, sorted by subnet then owner.
func (t *LeaseTable) Claims() []Claim {
	t.mu.Lock()
	out := make([]Claim, 0, len(t.claims))
	for _, c := range t.claims {
		out = append(out, c)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subnet != out[j].Subnet {
			return out[i].Subnet.Addr().Less(out[j].Subnet.Addr())
		}
		return out[i].Owner < out[j].Owner
	})
	return out
}

// Holder returns the claim that holds subnet at now: the oldest blocking
// claim, ties to the lower owner name. ok is false when the subnet is free.
func (t *LeaseTable) Holder(subnet netip.Prefix, now time.Time) (Claim, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.holderLocked(subnet, now)
}

func (t *LeaseTable) holderLocked(subnet netip.Prefix, now time.Time) (Claim, bool) {
	var best Claim
	found := false
	for _, owner := range t.owners[subnet] {
		c := t.claims[claimKey{subnet, owner}]
		if !c.Blocks(now) {
			continue
		}
		if !found || c.beats(best) {
			best, found = c, true
		}
	}
	return best, found
}

// ClaimOf returns owner's own claim on subnet, if the table has one.
func (t *LeaseTable) ClaimOf(subnet netip.Prefix, owner string) (Claim, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.claims[claimKey{subnet, owner}]
	return c, ok
}

// ClaimsBy returns every claim the owner has, of any state.
func (t *LeaseTable) ClaimsBy(owner string) []Claim {
	t.mu.Lock()
	var out []Claim
	for _, subnet := range t.subnets[owner] {
		out = append(out, t.claims[claimKey{subnet, owner}])
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Subnet.Addr().Less(out[j].Subnet.Addr()) })
	return out
}

// ErrNoFreeSubnet is PickFree's error when every subnet is claimed.
var ErrNoFreeSubnet = errors.New("no free subnet")

// PickFree returns the first subnet in the node's rendezvous order that no
// claim blocks at now, counting a lapsed reservation of a live owner (see
// SetLiveness) as blocking.
func (t *LeaseTable) PickFree(node string, now time.Time) (netip.Prefix, error) {
	t.mu.Lock()
	blocked, active := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for k, c := range t.claims {
		if c.Blocks(now) || c.State == LeaseReserved && t.ownerLive(c.Owner) {
			blocked[k.subnet] = true
			active[k.subnet] = active[k.subnet] || c.State == LeaseActive
		}
	}
	t.mu.Unlock()
	for _, s := range t.space.RendezvousOrder(node) {
		if !blocked[s] {
			return s, nil
		}
	}
	reserved := 0 // blocked only by dead nodes' reservations
	for s := range blocked {
		if !active[s] {
			reserved++
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w: all %d /%d subnets of %s are claimed, %d of them reserved for dead nodes (freed when their --lease-ttl ends, or at once by loomctl rmpeer)",
		ErrNoFreeSubnet, t.space.Count(), t.space.Bits, t.space.Cluster, reserved)
}

// tableWire is the versioned wire form of the table and of updates.
type tableWire struct {
	V      int     `json:"v"`
	Claims []Claim `json:"claims"`
}

const tableWireVersion = 1

// MaxEncodedTable bounds what Decode accepts, so a hostile peer cannot make
// an agent allocate without limit.
const MaxEncodedTable = 16 << 20

// EncodeClaims encodes claims for gossip.
func EncodeClaims(claims []Claim) []byte {
	b, err := json.Marshal(tableWire{V: tableWireVersion, Claims: claims})
	if err != nil {
		// Claims hold only strings, numbers and prefixes: Marshal cannot fail.
		panic(fmt.Sprintf("encode lease claims: %v", err))
	}
	return b
}

// DecodeClaims parses what EncodeClaims produced.
func DecodeClaims(b []byte) ([]Claim, error) {
	if len(b) > MaxEncodedTable {
		return nil, fmt.Errorf("decode lease claims: %d bytes exceeds limit %d", len(b), MaxEncodedTable)
	}
	var w tableWire
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode lease claims: %w", err)
	}
	if w.V != tableWireVersion {
		return nil, fmt.Errorf("decode lease claims: unsupported version %d", w.V)
	}
	return w.Claims, nil
}

// claimsPerMessage keeps one gossip broadcast of claims well inside a UDP
// packet (memberlist's default limit is 1400 bytes).
const claimsPerMessage = 6

// EncodeClaimMessages encodes claims as broadcast-sized messages.
func EncodeClaimMessages(claims []Claim) [][]byte {
	var out [][]byte
	for len(claims) > 0 {
		n := min(len(claims), claimsPerMessage)
		out = append(out, EncodeClaims(claims[:n]))
		claims = claims[n:]
	}
	return out
}

// LocalState implements the gossip state exchange: the whole table.
func (t *LeaseTable) LocalState() []byte { return EncodeClaims(t.Claims()) }

// relayClaimsAtMost is the most claims new here that one merge relays; a
// merge that brings more relays none of them. Only a push/pull brings that
// many (a broadcast carries claimsPerMessage), and then this node was
// behind (it joined, or was cut off), not its peers: they learn the same
// in their own push/pulls. A node joining a fabric of thousands would
// otherwise queue a broadcast for every six claims of the whole table,
// each sent several times, and fill its gossip packets for minutes with
// what everyone knows. Claims change rarely (a node claims, reserves a
// dead one's, releases), so what one side of a partition changed while cut
// off stays under the limit and still goes round within a second.
const relayClaimsAtMost = 64

// MergeRemoteState implements the gossip state exchange. It returns the
// claims that changed this table, as messages to relay: a node that learns
// something new passes it on, so an update reaches everyone even if its
// origin was cut off (a healed partition) before it could tell them
// (unless there are many: see relayClaimsAtMost). Relaying stops by
// itself, because a merge that changes nothing relays nothing.
func (t *LeaseTable) MergeRemoteState(b []byte) ([][]byte, bool, error) {
	claims, err := DecodeClaims(b)
	if err != nil {
		return nil, false, err
	}
	changed, err := t.Merge(claims...)
	if len(changed) > relayClaimsAtMost {
		return nil, true, err
	}
	return EncodeClaimMessages(changed), len(changed) > 0, err
}
