package ipam

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"time"
)

func testSpace(t testing.TB) SubnetSpace {
	s, err := NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSubnetSpaceValidation(t *testing.T) {
	for _, c := range []struct {
		cidr string
		bits int
	}{{"10.244.0.1/16", 24}, {"10.244.0.0/16", 16}, {"10.244.0.0/16", 12}, {"10.0.0.0/8", 28}, {"10.244.0.0/16", 31}} {
		if _, err := NewSubnetSpace(netip.MustParsePrefix(c.cidr), c.bits); err == nil {
			t.Errorf("%s cut into /%d accepted", c.cidr, c.bits)
		}
	}
	s := testSpace(t)
	for _, bad := range []string{"10.245.0.0/24", "10.244.1.0/25", "10.244.1.1/24"} {
		if err := s.Check(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("Check(%s) passed", bad)
		}
	}
}

func TestRendezvousOrderIsAStablePermutationPerNode(t *testing.T) {
	s := testSpace(t)
	a, b := s.RendezvousOrder("node-a"), s.RendezvousOrder("node-b")
	if !reflect.DeepEqual(a, s.RendezvousOrder("node-a")) {
		t.Fatal("order not stable")
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range a {
		if s.Check(p) != nil || seen[p] {
			t.Fatalf("not a permutation of the space: %s", p)
		}
		seen[p] = true
	}
	if len(seen) != s.Count() {
		t.Fatalf("order has %d subnets, want %d", len(seen), s.Count())
	}
	if a[0] == b[0] && a[1] == b[1] {
		t.Fatal("two nodes share their first two preferences; rendezvous order is not spreading")
	}
}

// claimUpdates is a random history of claims on a few subnets by a few owners.
func claimUpdates(r *rand.Rand, n int) []Claim {
	owners := []string{"a", "b", "c"}
	states := []LeaseState{LeaseActive, LeaseReserved, LeaseReleased}
	out := make([]Claim, n)
	for i := range out {
		out[i] = Claim{
			Subnet:  netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", r.Intn(3))),
			Owner:   owners[r.Intn(len(owners))],
			Epoch:   uint64(r.Intn(3)),
			Version: uint64(r.Intn(4)),
			State:   states[r.Intn(len(states))],
			Expires: int64(r.Intn(3)) * 1000,
		}
	}
	return out
}

func TestLeaseMergeIsOrderAndDuplicationInsensitive(t *testing.T) {
	space := testSpace(t)
	prop := func(seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		updates := claimUpdates(r, 30)
		a := NewLeaseTable(space)
		a.Merge(updates...)
		// Another replica sees the same updates shuffled, duplicated and in
		// batches, partly through full-state exchange.
		b := NewLeaseTable(space)
		shuffled := append(append([]Claim(nil), updates...), updates[:r.Intn(len(updates))]...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		half := len(shuffled) / 2
		c := NewLeaseTable(space)
		c.Merge(shuffled[:half]...)
		b.Merge(shuffled[half:]...)
		if _, _, err := b.MergeRemoteState(c.LocalState()); err != nil {
			return false
		}
		if !reflect.DeepEqual(a.Claims(), b.Claims()) {
			return false
		}
		now := time.Unix(1, 0)
		for i := 0; i < 3; i++ {
			s := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i))
			ha, oka := a.Holder(s, now)
			hb, okb := b.Holder(s, now)
			if oka != okb || ha != hb {
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}

func TestConflictOlderLeaseWinsTiesToLowerName(t *testing.T) {
	tab := NewLeaseTable(testSpace(t))
	s := netip.MustParsePrefix("10.244.5.0/24")
	tab.Merge(
		Claim{Subnet: s, Owner: "zeta", Epoch: 10, Version: 1, State: LeaseActive},
		Claim{Subnet: s, Owner: "alpha", Epoch: 20, Version: 1, State: LeaseActive},
	)
	if h, _ := tab.Holder(s, time.Now()); h.Owner != "zeta" {
		t.Fatalf("holder = %s, want the older lease (zeta)", h.Owner)
	}
	tab.Merge(Claim{Subnet: s, Owner: "beta", Epoch: 10, Version: 1, State: LeaseActive})
	if h, _ := tab.Holder(s, time.Now()); h.Owner != "beta" {
		t.Fatalf("holder = %s, want beta (same epoch, lower name)", h.Owner)
	}
	// The winner releases: the next oldest live claim holds it.
	tab.Merge(Claim{Subnet: s, Owner: "beta", Epoch: 10, Version: 2, State: LeaseReleased})
	if h, _ := tab.Holder(s, time.Now()); h.Owner != "zeta" {
		t.Fatalf("holder after release = %s, want zeta", h.Owner)
	}
}

func TestReservationBlocksUntilExpiry(t *testing.T) {
	tab := NewLeaseTable(testSpace(t))
	now := time.Unix(1_000_000, 0)
	order := testSpace(t).RendezvousOrder("newcomer")
	tab.Merge(Claim{Subnet: order[0], Owner: "dead", Epoch: 1, Version: 2, State: LeaseReserved, Expires: now.Add(time.Hour).Unix()})
	got, err := tab.PickFree("newcomer", now)
	if err != nil || got != order[1] {
		t.Fatalf("PickFree = %s, %v; want %s (first choice reserved)", got, err, order[1])
	}
	if got, _ := tab.PickFree("newcomer", now.Add(2*time.Hour)); got != order[0] {
		t.Fatalf("after expiry PickFree = %s, want %s", got, order[0])
	}
}

func TestMergeRejectsInvalidClaimsButKeepsValidOnes(t *testing.T) {
	tab := NewLeaseTable(testSpace(t))
	good := Claim{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Owner: "a", Epoch: 1, Version: 1, State: LeaseActive}
	_, err := tab.Merge(
		Claim{Subnet: netip.MustParsePrefix("10.9.0.0/24"), Owner: "x", State: LeaseActive},
		Claim{Subnet: netip.MustParsePrefix("10.244.2.0/25"), Owner: "x", State: LeaseActive},
		Claim{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Owner: "", State: LeaseActive},
		Claim{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Owner: "x", State: "bogus"},
		good,
	)
	if err == nil {
		t.Fatal("invalid claims merged without error")
	}
	if got := tab.Claims(); len(got) != 1 || got[0] != good {
		t.Fatalf("table = %+v, want only the valid claim", got)
	}
	for _, bad := range []string{"", "{", `{"v":2,"claims":[]}`, `{"v":1,"claims":"x"}`} {
		if _, _, err := tab.MergeRemoteState([]byte(bad)); err == nil {
			t.Errorf("MergeRemoteState(%q) accepted", bad)
		}
	}
}

// A full space is ErrNoFreeSubnet, counting the subnets that only a dead
// node's reservation blocks (they free up on their own); the space frees
// up when a reservation ends.
func TestPickFreeReportsExhaustion(t *testing.T) {
	s, _ := NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/23"), 24)
	tab := NewLeaseTable(s)
	now := time.Unix(1_000_000, 0)
	tab.Merge(Claim{Subnet: s.Nth(0), Owner: "a", Epoch: 1, State: LeaseActive},
		Claim{Subnet: s.Nth(1), Owner: "b", Epoch: 1, State: LeaseReserved, Expires: now.Unix() + 60})
	_, err := tab.PickFree("c", now)
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), "all 2 /24 subnets of 10.244.0.0/23 are claimed, 1 of them reserved for dead nodes") {
		t.Fatalf("PickFree in a full space: %v", err)
	}
	if got, err := tab.PickFree("c", now.Add(time.Minute+time.Second)); err != nil || got != s.Nth(1) {
		t.Fatalf("after the reservation ended: %s, %v; want %s", got, err, s.Nth(1))
	}
}

func TestMergeRelaysOnlyWhatChanged(t *testing.T) {
	tab := NewLeaseTable(testSpace(t))
	var claims []Claim
	for i := 0; i < 20; i++ {
		claims = append(claims, Claim{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)), Owner: "a", Epoch: 1, Version: 1, State: LeaseActive})
	}
	relay, _, err := tab.MergeRemoteState(EncodeClaims(claims))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range relay {
		if len(m) > 1200 {
			t.Fatalf("relay message of %d bytes does not fit a gossip packet", len(m))
		}
		got, _ := DecodeClaims(m)
		n += len(got)
	}
	if n != 20 {
		t.Fatalf("relayed %d claims, want the 20 new ones", n)
	}
	if relay, changed, _ := tab.MergeRemoteState(EncodeClaims(claims)); len(relay) != 0 || changed {
		t.Fatalf("merging known claims relayed %d messages (changed: %v); relaying must stop", len(relay), changed)
	}
}

// TestMergeOfAWholeTableRelaysNothing: a node that learns a large table
// at once (it joined) was behind its peers; passing it all on would fill
// its gossip for minutes with what they know.
func TestMergeOfAWholeTableRelaysNothing(t *testing.T) {
	tab := NewLeaseTable(testSpace(t))
	var claims []Claim
	for i := range relayClaimsAtMost + 1 {
		claims = append(claims, Claim{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)), Owner: fmt.Sprintf("n%d", i), Epoch: 1, Version: 1, State: LeaseActive})
	}
	relay, changed, err := tab.MergeRemoteState(EncodeClaims(claims))
	if err != nil {
		t.Fatal(err)
	}
	if len(relay) != 0 || !changed || len(tab.Claims()) != len(claims) {
		t.Fatalf("merging %d new claims relayed %d messages (changed: %v), the table holds %d; want all merged, none relayed",
			len(claims), len(relay), changed, len(tab.Claims()))
	}
}

func FuzzDecodeClaims(f *testing.F) {
	f.Add(EncodeClaims([]Claim{{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Owner: "a", Epoch: 1, Version: 2, State: LeaseReserved, Expires: 99}}))
	f.Add([]byte(`{"v":1,"claims":[{"subnet":"10.244.1.0/25","owner":"x","state":"active"}]}`))
	f.Add([]byte(`{"v":1,"claims":[{"subnet":"zzz"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tab := NewLeaseTable(testSpace(t))
		tab.MergeRemoteState(b)
		// Whatever got in must be valid and survive a round trip.
		for _, c := range tab.Claims() {
			if err := tab.Validate(c); err != nil {
				t.Fatalf("invalid claim merged: %+v: %v", c, err)
			}
		}
		again := NewLeaseTable(testSpace(t))
		if _, _, err := again.MergeRemoteState(tab.LocalState()); err != nil {
			t.Fatalf("re-merge of own state failed: %v", err)
		}
	})
}

// The by-subnet and by-owner indexes must answer as a scan of the whole
// table would, whatever order claims and their updates arrive in.
func TestIndexesAgreeWithAScan(t *testing.T) {
	space, _ := NewSubnetSpace(netip.MustParsePrefix("10.244.0.0/16"), 24)
	rng := rand.New(rand.NewSource(7))
	now := time.Unix(1_000_000, 0)
	tab := NewLeaseTable(space)
	states := []LeaseState{LeaseActive, LeaseReserved, LeaseReleased}
	for i := 0; i < 3000; i++ {
		c := Claim{Subnet: space.Nth(rng.Intn(20)), Owner: fmt.Sprintf("n%d", rng.Intn(15)), Epoch: uint64(rng.Intn(50) + 1),
			Version: uint64(rng.Intn(5) + 1), State: states[rng.Intn(3)]}
		if c.State == LeaseReserved {
			c.Expires = now.Unix() + int64(rng.Intn(20)) - 10
		}
		if _, err := tab.Merge(c); err != nil {
			t.Fatal(err)
		}
	}
	all := tab.Claims()
	for i := 0; i < 15; i++ {
		owner := fmt.Sprintf("n%d", i)
		var want []Claim
		for _, c := range all {
			if c.Owner == owner {
				want = append(want, c)
			}
		}
		if got := tab.ClaimsBy(owner); !slices.Equal(got, want) {
			t.Fatalf("ClaimsBy(%s) = %v, want %v", owner, got, want)
		}
	}
	for i := 0; i < 20; i++ {
		s := space.Nth(i)
		var want Claim
		found := false
		for _, c := range all {
			if c.Subnet == s && c.Blocks(now) && (!found || c.beats(want)) {
				want, found = c, true
			}
		}
		if got, ok := tab.Holder(s, now); ok != found || got != want {
			t.Fatalf("Holder(%s) = %v %v, want %v %v", s, got, ok, want, found)
		}
	}
}

// Claims that stopped blocking their subnet long ago are forgotten, by the
// time they carry, and not taken back when a peer sends them again.
func TestForgetEndedClaims(t *testing.T) {
	space := testSpace(t)
	now := time.Unix(10_000_000, 0)
	const ttl = 24 * time.Hour
	tab := NewLeaseTable(space)
	tab.now = func() time.Time { return now }
	s := func(i int) netip.Prefix { return space.Nth(i) }
	old := now.Add(-2*ttl - time.Minute).Unix()
	recent := now.Add(-time.Hour).Unix()
	claims := []Claim{
		{Subnet: s(1), Owner: "active", Epoch: 1, Version: 1, State: LeaseActive},
		{Subnet: s(2), Owner: "reserved", Epoch: 1, Version: 2, State: LeaseReserved, Expires: now.Add(time.Hour).Unix()},
		{Subnet: s(3), Owner: "lapsed-lately", Epoch: 1, Version: 2, State: LeaseReserved, Expires: recent},
		{Subnet: s(4), Owner: "lapsed-long-ago", Epoch: 1, Version: 2, State: LeaseReserved, Expires: old},
		{Subnet: s(5), Owner: "released-lately", Epoch: 1, Version: 2, State: LeaseReleased, Expires: recent},
		{Subnet: s(6), Owner: "released-long-ago", Epoch: 1, Version: 2, State: LeaseReleased, Expires: old},
		{Subnet: s(7), Owner: "released-by-an-old-agent", Epoch: 1, Version: 2, State: LeaseReleased},
		// The subnet a long-gone node released is someone else's now.
		{Subnet: s(6), Owner: "successor", Epoch: 5, Version: 1, State: LeaseActive},
	}
	// Learned while nothing was forgotten (as before an upgrade).
	if _, err := tab.Merge(claims...); err != nil {
		t.Fatal(err)
	}
	if len(tab.Forget()) != 0 {
		t.Fatal("a table without ForgetAfter forgot claims")
	}
	tab.ForgetAfter(2 * ttl)
	var gone []string
	for _, c := range tab.Forget() {
		gone = append(gone, c.Owner)
	}
	slices.Sort(gone)
	if strings.Join(gone, ",") != "lapsed-long-ago,released-long-ago" {
		t.Fatalf("forgot %v, want the two claims that ended more than %v ago", gone, 2*ttl)
	}
	if len(tab.Claims()) != len(claims)-2 || len(tab.ClaimsBy("released-long-ago")) != 0 {
		t.Fatalf("table after forgetting: %v", tab.Claims())
	}
	if h, ok := tab.Holder(s(6), now); !ok || h.Owner != "successor" {
		t.Fatalf("holder of %s = %v %v, want successor", s(6), h, ok)
	}
	// A peer that has not forgotten yet sends them again: ignored.
	if changed, err := tab.Merge(claims...); err != nil || len(changed) != 0 {
		t.Fatalf("merging forgotten claims again changed %v (err %v)", changed, err)
	}
	// The owner coming back claims anew: a new epoch, taken.
	back := Claim{Subnet: s(4), Owner: "lapsed-long-ago", Epoch: 9, Version: 1, State: LeaseActive}
	if changed, _ := tab.Merge(back); len(changed) != 1 {
		t.Fatal("a new claim by a forgotten owner was ignored")
	}
}

// The reason for the wait: a node cut off from its peers while a node
// released its subnet reserves that subnet for the releaser (it looks
// dead from there). When the cut heals after the release was forgotten,
// that reservation must not block the subnet's new holder, and it has
// lapsed by then because the wait is longer than any reservation.
func TestForgottenReleaseIsNotRevivedByAReservationFromACutOffNode(t *testing.T) {
	space := testSpace(t)
	const ttl = 24 * time.Hour
	t0 := time.Unix(10_000_000, 0)
	subnet := space.Nth(3)
	mover := Claim{Subnet: subnet, Owner: "mover", Epoch: 1, Version: 1, State: LeaseActive}

	fabric, cutOff := NewLeaseTable(space), NewLeaseTable(space)
	fabric.Merge(mover)
	cutOff.Merge(mover)
	fabric.Merge(mover.Release(t0))
	fabric.Merge(Claim{Subnet: subnet, Owner: "newcomer", Epoch: 7, Version: 1, State: LeaseActive})
	reserved := mover
	reserved.Version, reserved.State, reserved.Expires = 2, LeaseReserved, t0.Add(ttl).Unix()
	cutOff.Merge(reserved)

	later := t0.Add(2*ttl + time.Second)
	fabric.now = func() time.Time { return later }
	fabric.ForgetAfter(2 * ttl)
	if gone := fabric.Forget(); len(gone) != 1 || gone[0].Owner != "mover" {
		t.Fatalf("forgot %v, want mover's release", gone)
	}
	if _, _, err := fabric.MergeRemoteState(cutOff.LocalState()); err != nil {
		t.Fatal(err)
	}
	if h, ok := fabric.Holder(subnet, later); !ok || h.Owner != "newcomer" {
		t.Fatalf("after the cut healed %s is held by %v (%v), want newcomer", subnet, h, ok)
	}
}

// A reservation says its owner is gone. When the owner is alive after all
// (a partition healed before it took its claim back), the lapsed
// reservation still holds the subnet for PickFree and is neither
// forgotten nor ignored: forgetting it once let a peer take a live
// node's subnet.
func TestLapsedReservationOfALiveOwnerStillHolds(t *testing.T) {
	space := testSpace(t)
	now := time.Unix(10_000_000, 0)
	const ttl = time.Hour
	lapsed := func(owner string, i int) Claim {
		return Claim{Subnet: space.Nth(i), Owner: owner, Epoch: 1, Version: 2, State: LeaseReserved, Expires: now.Add(-3 * ttl).Unix()}
	}
	tab := NewLeaseTable(space)
	tab.now = func() time.Time { return now }
	tab.Merge(lapsed("back", 0), lapsed("gone", 1))
	for i := 2; i < space.Count(); i++ {
		tab.Merge(Claim{Subnet: space.Nth(i), Owner: fmt.Sprintf("n%d", i), Epoch: 1, Version: 1, State: LeaseActive})
	}
	tab.SetLiveness(func(owner string) bool { return owner == "back" })
	tab.ForgetAfter(2 * ttl)
	if got, err := tab.PickFree("newcomer", now); err != nil || got != space.Nth(1) {
		t.Fatalf("PickFree = %v, %v; want the dead owner's %s, not the live owner's", got, err, space.Nth(1))
	}
	gone := tab.Forget()
	if len(gone) != 1 || gone[0].Owner != "gone" {
		t.Fatalf("forgot %v, want only the dead owner's claim", gone)
	}
	if len(tab.ClaimsBy("back")) != 1 {
		t.Fatal("the live owner's claim was forgotten")
	}
	// A fresh table (a restarted node) learning both from a peer keeps the
	// live owner's and ignores the other.
	fresh := NewLeaseTable(space)
	fresh.now = tab.now
	fresh.SetLiveness(func(owner string) bool { return owner == "back" })
	fresh.ForgetAfter(2 * ttl)
	fresh.Merge(lapsed("back", 0), lapsed("gone", 1))
	if len(fresh.ClaimsBy("back")) != 1 || len(fresh.ClaimsBy("gone")) != 0 {
		t.Fatalf("fresh table holds %v", fresh.Claims())
	}
}

// Changes counts what changed the table, and nothing else: a merge of
// what it holds already, or a Forget that drops nothing, is no change.
func TestLeaseTableCountsChanges(t *testing.T) {
	space := testSpace(t)
	now := time.Unix(10_000_000, 0)
	tab := NewLeaseTable(space)
	tab.now = func() time.Time { return now }
	released := Claim{Subnet: space.Nth(1), Owner: "a", Epoch: 1, Version: 2, State: LeaseReleased, Expires: now.Add(-time.Hour).Unix()}
	steps := []struct {
		name string
		do   func()
		want uint64
	}{
		{"new claim", func() { tab.Merge(released) }, 1},
		{"the same claim again", func() { tab.Merge(released) }, 1},
		{"an invalid claim", func() {
			tab.Merge(Claim{Subnet: netip.MustParsePrefix("192.0.2.0/24"), Owner: "x", State: LeaseActive})
		}, 1},
		{"Forget that drops nothing", func() { tab.Forget() }, 1},
		{"Forget that drops the claim", func() { tab.ForgetAfter(time.Minute); tab.Forget() }, 2},
	}
	for _, s := range steps {
		s.do()
		if got := tab.Changes(); got != s.want {
			t.Fatalf("after %s: %d changes, want %d", s.name, got, s.want)
		}
	}
}
