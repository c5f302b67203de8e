package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func rec(node, ip string, labels map[string]string) PodRecord {
	return PodRecord{Node: node, IP: netip.MustParseAddr(ip), Namespace: "x", Name: "p", Labels: labels}
}

// deliver merges every update into dst and returns what dst relays.
func deliver(t *testing.T, dst *Directory, updates [][]byte) [][]byte {
	t.Helper()
	var relay [][]byte
	for _, u := range updates {
		r, err := dst.MergeRemoteState(u)
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
		`{"not":"a list"}`,
	} {
		if _, err := d.MergeRemoteState([]byte(body)); err == nil {
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
