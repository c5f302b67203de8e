package policy

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDirectorySavedRecordsRestore: what a node saved of its peers' pods
// is what a restarted node holds before gossip says anything; its own
// records are never saved (it publishes them anew from its pods).
func TestDirectorySavedRecordsRestore(t *testing.T) {
	a, b := NewDirectory("a", nil), NewDirectory("b", nil)
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"app": "web"}), rec("", "10.244.0.3", nil)}))
	b.Publish([]PodRecord{rec("", "10.244.1.2", nil)})
	saved := b.Unsaved()
	if len(saved.Put) != 2 || len(saved.Delete) != 0 {
		t.Fatalf("b saves %d records and deletes %v, want a's 2 and nothing", len(saved.Put), saved.Delete)
	}
	if c := b.Unsaved(); !c.Empty() {
		t.Fatalf("nothing changed, yet b saves %+v", c)
	}
	b2 := NewDirectory("b", nil)
	if n, err := b2.Restore(saved.Put); err != nil || n != 2 {
		t.Fatalf("restored %d (%v), want 2", n, err)
	}
	if got, want := sortedRecords(b2), sortedRecords(b); !slices.EqualFunc(got, want, sameSaved) {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	if c := b2.Unsaved(); !c.Empty() {
		t.Fatalf("restoring made changes to save: %+v", c)
	}

	// A deletion is saved as the tombstone it is: restored, it keeps the
	// pod out even when a peer offers the older live record.
	old := a.LocalState()
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.3", nil)}))
	changed := b.Unsaved()
	if len(changed.Put) != 1 {
		t.Fatalf("the deletion saves %d records, want the tombstone", len(changed.Put))
	}
	maps.Copy(saved.Put, changed.Put)
	b3 := NewDirectory("b", nil)
	if _, err := b3.Restore(saved.Put); err != nil {
		t.Fatal(err)
	}
	deliver(t, b3, [][]byte{old})
	if got := b3.Records(); len(got) != 1 || got[0].IP != netip.MustParseAddr("10.244.0.3") {
		t.Fatalf("after a stale peer's state the restored node holds %+v, want only 10.244.0.3", got)
	}
}

func sortedRecords(d *Directory) []PodRecord {
	return slices.SortedFunc(slices.Values(d.Records()), func(x, y PodRecord) int { return x.IP.Compare(y.IP) })
}

func sameSaved(x, y PodRecord) bool {
	return x.Node == y.Node && x.IP == y.IP && x.Version == y.Version && sameRecord(x, y)
}

// TestDirectoryForgottenRecordsAreDeleted: records Forget drops are
// deleted from the saved state too, or they would come back at the next
// start.
func TestDirectoryForgottenRecordsAreDeleted(t *testing.T) {
	a, b := NewDirectory("a", nil), NewDirectory("b", nil)
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", nil)}))
	b.Unsaved()
	b.ForgetAfter(func(string) bool { return false }, time.Hour)
	b.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if gone := b.Forget(); !slices.Equal(gone, []string{"a"}) {
		t.Fatalf("forgot %v, want a", gone)
	}
	if c := b.Unsaved(); len(c.Put) != 0 || !slices.Equal(c.Delete, []string{"10.244.0.2 a"}) {
		t.Fatalf("after forgetting a, b saves %+v, want a's record deleted", c)
	}
}

// TestDirectoryUnwrittenChangesAreSavedAgain: a failed write loses
// nothing; the retry writes the records as they are by then.
func TestDirectoryUnwrittenChangesAreSavedAgain(t *testing.T) {
	a, b := NewDirectory("a", nil), NewDirectory("b", nil)
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", nil), rec("", "10.244.0.3", nil)}))
	failed := b.Unsaved()
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", map[string]string{"v": "2"}), rec("", "10.244.0.3", nil)}))
	b.Unwritten(failed)
	retry := b.Unsaved()
	if len(retry.Put) != 2 {
		t.Fatalf("the retry saves %d records, want 2", len(retry.Put))
	}
	b2 := NewDirectory("b", nil)
	if _, err := b2.Restore(retry.Put); err != nil {
		t.Fatal(err)
	}
	got := sortedRecords(b2)
	if len(got) != 2 || got[0].Labels["v"] != "2" {
		t.Fatalf("restored %+v, want 10.244.0.2 with v=2 and 10.244.0.3", got)
	}
}

// TestDirectoryRestoreRefusesBadEntries: a damaged or foreign entry is
// named, not restored, and deleted at the next save; the others are
// restored.
func TestDirectoryRestoreRefusesBadEntries(t *testing.T) {
	a, b := NewDirectory("a", nil), NewDirectory("b", nil)
	deliver(t, b, a.Publish([]PodRecord{rec("", "10.244.0.2", nil)}))
	saved := b.Unsaved().Put
	good := saved["10.244.0.2 a"]
	outside := NewDirectory("a", nil).Publish([]PodRecord{rec("", "192.168.0.2", nil)})
	deliver(t, b, outside)
	outsideRec := b.Unsaved().Put["192.168.0.2 a"]
	bad := map[string][]byte{
		"10.244.0.2 a":  good,
		"10.244.0.9 a":  good,                                           // another address's key
		"10.244.0.2 z":  []byte(`{"node":`),                             // cut short
		"not a key":     []byte(`{}`),                                   // no record
		"192.168.0.2 a": outsideRec,                                     // refused by validate
		"10.244.1.2 b":  []byte(`{"node":"b","ip":"10.244.1.2","v":1}`), // this node's own
	}
	validate := func(r PodRecord) error {
		if !netip.MustParsePrefix("10.244.0.0/16").Contains(r.IP) {
			return errors.New("outside the cluster")
		}
		return nil
	}
	b2 := NewDirectory("b", validate)
	n, err := b2.Restore(bad)
	if n != 1 || err == nil {
		t.Fatalf("restored %d (%v), want 1 and an error", n, err)
	}
	for key := range bad {
		if key != "10.244.0.2 a" && !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("the error does not name %q: %v", key, err)
		}
	}
	c := b2.Unsaved()
	if got, want := slices.Sorted(slices.Values(c.Delete)), []string{"10.244.0.2 z", "10.244.0.9 a", "10.244.1.2 b", "192.168.0.2 a", "not a key"}; !slices.Equal(got, want) {
		t.Fatalf("the next save deletes %v, want %v", got, want)
	}
}
