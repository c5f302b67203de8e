package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func rec(node, ip string, labels map[string]string) PodRecord {
	return PodRecord{Node: node, IP: netip.MustParseAddr(ip), Namespace: "x", Name: "p", Labels: labels}
}

// Records returns the live records of other nodes, for tests to look at
// (the agent reads only some nodes', with RecordsIn).
func (d *Directory) Records() []PodRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []PodRecord
	for node, held := range d.records {
		if node == d.self {
			continue
		}
		for _, r := range held {
			if !r.Deleted {
				out = append(out, r)
			}
		}
	}
	return out
}

// deliver merges every update into dst and returns what dst relays.
func deliver(t testing.TB, dst *Directory, updates [][]byte) [][]byte {
	t.Helper()
	var relay [][]byte
	for _, u := range updates {
		r, _, err := dst.MergeRemoteState(u)
		if err != nil {
			t.Fatalf("merge: %v", err)
		}
		relay = append(relay, r...)
	}
	return relay
}

func TestDirectoryPublishMergeDelete(t *testing.T) {
	a := NewDirectory("a", nil)
	b := NewDirectory("b", nil)
	up := a.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "web"})})
	if len(up) != 1 {
		t.Fatalf("publish sent %d updates", len(up))
	}
	if relay := deliver(t, b, up); len(relay) != 1 {
		t.Fatalf("news not relayed: %d", len(relay))
	}
	if relay := deliver(t, b, up); len(relay) != 0 {
		t.Fatal("a duplicate was relayed again")
	}
	if got := b.Records(); len(got) != 1 || got[0].Labels["app"] != "web" {
		t.Fatalf("b has %+v", got)
	}
	// Label change, then deletion.
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "db"})}))
	if got := b.Records(); len(got) != 1 || got[0].Labels["app"] != "db" {
		t.Fatalf("after relabel b has %+v", got)
	}
	if up := a.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "db"})}); len(up) != 0 {
		t.Fatal("an unchanged pod was republished")
	}
	deliver(t, b, a.Publish(nil))
	if got := b.Records(); len(got) != 0 {
		t.Fatalf("deleted pod still known: %+v", got)
	}
	// Full state carries the tombstone to a node that missed it.
	c := NewDirectory("c", nil)
	deliver(t, c, [][]byte{b.LocalState()})
	if got := c.Records(); len(got) != 0 {
		t.Fatalf("c resurrected a deleted pod: %+v", got)
	}
}

// TestDirectoryRestartSupersedesOldRecords: a node that restarts without
// a pod it had gossiped corrects peers that still hold the old record.
func TestDirectoryRestartSupersedesOldRecords(t *testing.T) {
	a := NewDirectory("a", nil)
	b := NewDirectory("b", nil)
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", nil), rec("", "10.244.0.3", nil)}))
	a2 := NewDirectory("a", nil)
	a2.now = func() time.Time { return time.Unix(0, 1) } // a clock far behind
	deliver(t, b, a2.Publish([]PodRecord{rec("", "10.244.0.3", map[string]string{"v": "2"})}))
	fixes := deliver(t, a2, [][]byte{b.LocalState()})
	deliver(t, b, fixes)
	got := b.Records()
	if len(got) != 1 || got[0].IP != netip.MustParseAddr("10.244.0.3") || got[0].Labels["v"] != "2" {
		t.Fatalf("b has %+v after a's restart", got)
	}
}

// TestDirectoryRelaysFewNewsAndEveryCorrection: a merge that brings many
// records new here (a push/pull to a node that just joined a large
// fabric) relays none of them; its peers have them. Corrections of this
// node's own records still go out however many come with them.
func TestDirectoryRelaysFewNewsAndEveryCorrection(t *testing.T) {
	pods := func(n int) []PodRecord {
		var out []PodRecord
		for i := range n {
			out = append(out, rec("", fmt.Sprintf("10.244.%d.%d", i/200, i%200+2), nil))
		}
		return out
	}
	a := NewDirectory("a", nil)
	a.Publish(pods(relayNewsAtMost))
	b := NewDirectory("b", nil)
	relay, changed, err := b.MergeRemoteState(a.LocalState())
	if err != nil || !changed || len(relay) != relayNewsAtMost {
		t.Fatalf("a merge of %d new records: relayed %d, changed %v, %v; want all relayed", relayNewsAtMost, len(relay), changed, err)
	}

	a.Publish(pods(relayNewsAtMost + 1))
	fresh := NewDirectory("b", nil)
	relay, changed, err = fresh.MergeRemoteState(a.LocalState())
	if err != nil || !changed || len(relay) != 0 {
		t.Fatalf("a merge of %d new records: relayed %d, changed %v, %v; want none relayed, the state changed", relayNewsAtMost+1, len(relay), changed, err)
	}
	if live, _ := fresh.Count(); live != relayNewsAtMost+1 {
		t.Fatalf("holds %d records, want %d", live, relayNewsAtMost+1)
	}

	// b restarted without its 3 pods; a still holds them, among many.
	deliver(t, a, b.Publish(pods(3)))
	restarted := NewDirectory("b", nil)
	relay, _, err = restarted.MergeRemoteState(a.LocalState())
	if err != nil {
		t.Fatal(err)
	}
	if len(relay) != 3 {
		t.Fatalf("relayed %d updates, want the 3 corrections of b's own records", len(relay))
	}
	for _, u := range relay {
		var got []PodRecord
		if err := json.Unmarshal(u, &got); err != nil || len(got) != 1 || got[0].Node != "b" || !got[0].Deleted {
			t.Fatalf("relayed %s (%v), want a deletion of one of b's pods", u, err)
		}
	}
}

func TestDirectoryRejectsBadRecords(t *testing.T) {
	d := NewDirectory("a", func(r PodRecord) error {
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(r.IP) {
			return errString("outside the cluster")
		}
		return nil
	})
	for _, body := range []string{
		`[{"node":"b","ip":"10.244.1.2","v":1,"ns":"Bad_NS"}]`,
		`[{"node":"b","ip":"10.9.1.2","v":1,"ns":"x"}]`,
		`[{"node":"","ip":"10.244.1.2","v":1,"ns":"x"}]`,
		`[{"node":"b","ip":"10.244.1.2","v":0,"ns":"x"}]`,
		`[{"node":"b","ip":"10.244.1.2","v":1,"ns":"x","labels":{"k":"bad value!"}}]`,
		`[{"node":"b","ip":"10.244.1.2","v":1,"ns":"x","uid":"a uid"}]`,
		`[{"node":"b","ip":"10.244.1.2","v":1,"ns":"x","uid":"` + strings.Repeat("u", 65) + `"}]`,
		`{"not":"a list"}`,
	} {
		if _, _, err := d.MergeRemoteState([]byte(body)); err == nil {
			t.Errorf("accepted %s", body)
		}
	}
	if len(d.Records()) != 0 {
		t.Fatalf("bad records kept: %+v", d.Records())
	}
	big := map[string]string{}
	for i := 0; i < 40; i++ {
		big[strings.Repeat("k", 20)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 40)
	}
	if _, err := EncodeRecord(rec("a", "10.244.0.2", big)); err == nil {
		t.Error("oversized record encoded")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestDirectoryForgetsNodesGoneLongAgo: records of a node membership no
// longer knows, silent for the forget horizon, are dropped and not taken
// back from a peer that still has them; a known node's records are kept
// however old (its agent may be restarting), and so are a new node's.
func TestDirectoryForgetsNodesGoneLongAgo(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	known := map[string]bool{"quiet": true}
	d := NewDirectory("self", nil)
	d.now = clock
	d.ForgetAfter(func(n string) bool { return known[n] }, time.Hour)

	publisher := func(node string, at time.Time, ips ...string) *Directory {
		p := NewDirectory(node, nil)
		p.now = func() time.Time { return at }
		var recs []PodRecord
		for _, ip := range ips {
			recs = append(recs, rec("", ip, nil))
		}
		p.Publish(recs)
		return p
	}
	gone := publisher("gone", now.Add(-2*time.Hour), "10.244.1.2", "10.244.1.3")
	quiet := publisher("quiet", now.Add(-48*time.Hour), "10.244.2.2")
	fresh := publisher("fresh", now.Add(-time.Minute), "10.244.3.2")
	d.Publish([]PodRecord{rec("", "10.244.0.2", nil)})
	d.now = func() time.Time { return now.Add(-3 * time.Hour) } // before gone went quiet
	deliver(t, d, [][]byte{gone.LocalState()})
	d.now = clock
	deliver(t, d, [][]byte{quiet.LocalState(), fresh.LocalState()})
	if live, _ := d.Count(); live != 5 {
		t.Fatalf("%d live records before forgetting, want 5", live)
	}

	if got := d.Forget(); !slices.Equal(got, []string{"gone"}) {
		t.Fatalf("forgot %v, want [gone]", got)
	}
	if live, _ := d.Count(); live != 3 {
		t.Fatalf("%d live records after forgetting, want 3 (self, quiet, fresh)", live)
	}
	// A peer that has not forgotten yet sends them again: ignored.
	if relay := deliver(t, d, [][]byte{gone.LocalState()}); len(relay) != 0 {
		t.Fatalf("forgotten records relayed: %d", len(relay))
	}
	if live, _ := d.Count(); live != 3 {
		t.Fatal("forgotten records were taken back")
	}
	// The node comes back and publishes: taken in at once.
	back := publisher("gone", now, "10.244.1.2")
	if relay := deliver(t, d, [][]byte{back.LocalState()}); len(relay) != 1 {
		t.Fatalf("a returning node's record was not taken: %d relayed", len(relay))
	}
	// Without ForgetAfter nothing is forgotten.
	keep := NewDirectory("self", nil)
	deliver(t, keep, [][]byte{gone.LocalState()})
	if got := keep.Forget(); got != nil {
		t.Fatalf("forgot %v without ForgetAfter", got)
	}
}

// TestDirectoryToldOfPodsGone: a peer's deleted pod, or another pod at
// its address, is reported (its flows must go); a relabelled one is not.
func TestDirectoryToldOfPodsGone(t *testing.T) {
	a, b := NewDirectory("a", nil), NewDirectory("b", nil)
	var gone []netip.Addr
	b.OnPodGone(func(ip netip.Addr) { gone = append(gone, ip) })
	web := func(name string, labels map[string]string) PodRecord {
		r := rec("", "10.244.0.2", labels)
		r.Name = name
		return r
	}
	deliver(t, b, a.Publish([]PodRecord{web("web-1", nil), rec("", "10.244.0.3", nil)}))
	deliver(t, b, a.Publish([]PodRecord{web("web-1", map[string]string{"v": "2"}), rec("", "10.244.0.3", nil)}))
	if len(gone) != 0 {
		t.Fatalf("reported %v for new and relabelled pods", gone)
	}
	deliver(t, b, a.Publish([]PodRecord{web("web-2", nil)}))
	want := []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("10.244.0.3")}
	slices.SortFunc(gone, netip.Addr.Compare)
	if !slices.Equal(gone, want) {
		t.Fatalf("reported %v, want %v (a replaced pod and a deleted one)", gone, want)
	}
	// A pod under the same name (or none) given the address anew is
	// another pod too; the same one published again is not.
	gone = nil
	first, again := web("web-2", nil), web("web-2", nil)
	first.Since, again.Since = 1000, 2000
	deliver(t, b, a.Publish([]PodRecord{first}))
	deliver(t, b, a.Publish([]PodRecord{first}))
	deliver(t, b, a.Publish([]PodRecord{again}))
	if want := []netip.Addr{netip.MustParseAddr("10.244.0.2")}; !slices.Equal(gone, want) {
		t.Fatalf("reported %v, want %v (the pod given the address anew)", gone, want)
	}
	// Another Pod UID under the same name is another pod; a UID said
	// where none was (an agent upgraded under its pods) is not.
	gone = nil
	said, other := again, again
	said.UID, other.UID = "uid-1", "uid-2"
	deliver(t, b, a.Publish([]PodRecord{said}))
	deliver(t, b, a.Publish([]PodRecord{other}))
	if want := []netip.Addr{netip.MustParseAddr("10.244.0.2")}; !slices.Equal(gone, want) {
		t.Fatalf("reported %v, want %v (the pod of another UID)", gone, want)
	}
	if r := b.Records(); len(r) != 1 || r[0].UID != "uid-2" {
		t.Fatalf("b holds %+v, want the record of uid-2", r)
	}
}

// FuzzDirectoryMerge: whatever a peer sends as pod directory state, the
// merge neither panics nor keeps a record it would refuse from another
// peer: what the directory then holds passes on to a fresh one intact.
func FuzzDirectoryMerge(f *testing.F) {
	valid := func(r PodRecord) error {
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(r.IP) {
			return errString("outside the cluster")
		}
		return nil
	}
	f.Add([]byte(`[{"node":"b","ip":"10.244.1.2","v":1,"ns":"x","name":"p","labels":{"app":"web"}}]`))
	f.Add([]byte(`[{"node":"b","ip":"10.244.1.2","v":2,"deleted":true},{"node":"a","ip":"10.244.0.2","v":3,"ns":"x"}]`))
	f.Add([]byte(`[{"node":"b","ip":"::1","v":1}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d := NewDirectory("a", valid)
		d.ForgetAfter(func(string) bool { return false }, time.Hour)
		d.MergeRemoteState(body)
		live, deleted := d.Count()
		fresh := NewDirectory("c", valid)
		if _, _, err := fresh.MergeRemoteState(d.LocalState()); err != nil {
			t.Fatalf("a merged record is refused when passed on: %v", err)
		}
		if l, del := fresh.Count(); l != live || del != deleted {
			t.Fatalf("passed on %d live, %d deleted records; %d, %d arrived", live, deleted, l, del)
		}
	})
}

// PodsIn yields the live pods of the nodes named, in their subnets only,
// and never this node's own or a deleted pod.
func TestDirectoryPodsIn(t *testing.T) {
	d := NewDirectory("self", nil)
	for node, ips := range map[string][]string{
		"a":    {"10.244.1.2", "10.244.1.3", "10.244.9.2"},
		"b":    {"10.244.2.2"},
		"self": {"10.244.3.2"},
	} {
		src := NewDirectory(node, nil)
		var pods []PodRecord
		for _, ip := range ips {
			pods = append(pods, rec("", ip, nil))
		}
		deliver(t, d, src.Publish(pods))
		if node == "a" {
			deliver(t, d, src.Publish(pods[1:])) // 10.244.1.2 deleted
		}
	}
	got := slices.Collect(d.PodsIn(map[string][]netip.Prefix{
		"a":    {netip.MustParsePrefix("10.244.1.0/24")},
		"self": {netip.MustParsePrefix("10.244.3.0/24")},
		"gone": {netip.MustParsePrefix("10.244.4.0/24")},
	}))
	if len(got) != 1 || got[0].Node != "a" || got[0].IP != netip.MustParseAddr("10.244.1.3") {
		t.Fatalf("PodsIn = %+v, want a's live pod in its subnet, 10.244.1.3, only", got)
	}
}

// TestDirectorySharesLabelSets: records with the same labels, from
// peers or this node, share one map, and a set no record carries any
// more (its pods relabelled, deleted or their node forgotten) is let go.
func TestDirectorySharesLabelSets(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	d := NewDirectory("self", nil)
	d.now = func() time.Time { return now }
	d.ForgetAfter(func(string) bool { return false }, time.Hour)
	web := func() map[string]string { return map[string]string{"app": "web", "tier": "front"} }
	peer := NewDirectory("peer", nil)
	peer.now = func() time.Time { return now.Add(-2 * time.Hour) }
	peer.Publish([]PodRecord{rec("", "10.244.1.2", web()), rec("", "10.244.1.3", web()),
		rec("", "10.244.1.4", map[string]string{"app": "db"})})
	d.now = func() time.Time { return now.Add(-2 * time.Hour) } // when the peer published
	deliver(t, d, [][]byte{peer.LocalState()})
	d.now = func() time.Time { return now }
	d.Publish([]PodRecord{rec("", "10.244.0.2", web())})
	mapOf := func(l map[string]string) uintptr { return reflect.ValueOf(l).Pointer() }
	var shared []uintptr
	for _, r := range d.Records() {
		if r.Labels["app"] == "web" {
			shared = append(shared, mapOf(r.Labels))
		}
	}
	var own []PodRecord
	for _, r := range d.records["self"] {
		own = append(own, r)
	}
	if len(shared) != 2 || shared[0] != shared[1] || len(own) != 1 || mapOf(own[0].Labels) != shared[0] {
		t.Fatalf("web's records do not share one map: peer's %v, own %v", shared, own)
	}
	if !maps.Equal(own[0].Labels, web()) {
		t.Fatalf("own record's labels %v, want %v", own[0].Labels, web())
	}
	if len(d.labelSets.sets) != 2 {
		t.Fatalf("%d label sets kept, want 2 (web, db)", len(d.labelSets.sets))
	}
	// This node's pod relabelled, then gone: the peer's pods keep web.
	d.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "cache"})})
	if len(d.labelSets.sets) != 3 || d.labelSets.sets[labelSetKey(web())].refs != 2 {
		t.Fatalf("after relabelling: %d sets kept, web's counted %d; want 3, 2", len(d.labelSets.sets), d.labelSets.sets[labelSetKey(web())].refs)
	}
	d.Publish(nil)
	if len(d.labelSets.sets) != 2 {
		t.Fatalf("after the pod's deletion: %d label sets kept, want 2", len(d.labelSets.sets))
	}
	// The peer, silent and unknown, is forgotten with its pods.
	if got := d.Forget(); !slices.Equal(got, []string{"peer"}) {
		t.Fatalf("forgot %v, want [peer]", got)
	}
	if len(d.labelSets.sets) != 0 || len(d.nodeNames) != 1 {
		t.Fatalf("after forgetting the peer: label sets %v, node names %v; want none and self's", d.labelSets.sets, d.nodeNames)
	}
}

func labelSetKey(labels map[string]string) string { return string(appendLabelSetKey(nil, labels)) }

func TestLabelSetKeyTellsSetsApart(t *testing.T) {
	sets := []map[string]string{nil, {"a": "b"}, {"a": "bc"}, {"ab": "c"}, {"a": "b", "c": "d"}, {"a": "b:1:c"}, {"a": "", "b": ""}}
	seen := map[string]int{}
	for i, s := range sets {
		k := labelSetKey(s)
		if j, ok := seen[k]; ok {
			t.Fatalf("sets %v and %v share the key %q", sets[j], s, k)
		}
		seen[k] = i
		if labelSetKey(maps.Clone(s)) != k {
			t.Fatalf("equal sets %v have different keys", s)
		}
	}
}
