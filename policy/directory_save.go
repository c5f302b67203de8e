package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Other nodes' records are kept on disk as well as in memory: a restarted
// agent learns them again only from the nodes themselves, and one whose
// agent is down too (every agent restarted at once) could not tell it
// until it was back. Its pods would drop out of every policy meanwhile,
// and new connections the policies allow from them be refused.

// DirectoryChanges are the records of other nodes changed since the
// directory was last saved: Put holds each one to write under its key,
// Delete the keys of records the directory no longer holds.
type DirectoryChanges struct {
	Put    map[string][]byte
	Delete []string
}

// Empty reports whether there is nothing to save.
func (c DirectoryChanges) Empty() bool { return len(c.Put) == 0 && len(c.Delete) == 0 }

// savedKey is the key a record is saved under: an address never holds a
// space, so no two (node, address) pairs share one.
func savedKey(k recordKey) string { return k.ip.String() + " " + k.node }

// markUnsaved notes that another node's record changed or went. Called
// with mu held.
func (d *Directory) markUnsaved(k recordKey) {
	if k.node != d.self {
		d.unsaved[k] = true
	}
}

// Unsaved returns what changed since the last call and forgets it: the
// caller writes it, and hands it back to Unwritten if that fails.
func (d *Directory) Unsaved() DirectoryChanges {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := DirectoryChanges{Put: map[string][]byte{}, Delete: d.undecodable}
	d.undecodable = nil
	for k := range d.unsaved {
		r, ok := d.record(k)
		if !ok {
			c.Delete = append(c.Delete, savedKey(k))
			continue
		}
		b, err := json.Marshal(r)
		if err != nil {
			continue // a record that was stored encodes
		}
		c.Put[savedKey(k)] = b
	}
	clear(d.unsaved)
	return c
}

// Unwritten takes back changes whose write failed, so the next Unsaved
// returns them again (with the records as they are then).
func (d *Directory) Unwritten(c DirectoryChanges) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, key := range slices.Concat(slices.Collect(maps.Keys(c.Put)), c.Delete) {
		if k, ok := parseSavedKey(key); ok {
			d.unsaved[k] = true
		} else {
			d.undecodable = append(d.undecodable, key)
		}
	}
}

func parseSavedKey(key string) (recordKey, bool) {
	addr, node, found := strings.Cut(key, " ")
	ip, err := netip.ParseAddr(addr)
	return recordKey{node: node, ip: ip}, found && err == nil && node != ""
}

// Restore puts back the records of other nodes saved at the last run,
// before gossip has said anything: each is vetted as a peer's would be,
// and a newer one already held wins. Entries that are not a valid record
// under their own key are not restored, and the next Unsaved deletes
// them; the error names them.
func (d *Directory) Restore(saved map[string][]byte) (restored int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(saved)) {
		if err := d.restore(key, saved[key]); err != nil {
			errs = append(errs, fmt.Errorf("saved pod record %q: %w", key, err))
			d.undecodable = append(d.undecodable, key)
			continue
		}
		restored++
	}
	return restored, errors.Join(errs...)
}

// restore puts back one saved record. Called with mu held.
func (d *Directory) restore(key string, b []byte) error {
	var r PodRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	k := recordKey{r.Node, r.IP}
	if savedKey(k) != key {
		return errors.New("the record is of another node or address")
	}
	if r.Node == d.self {
		return errors.New("the record is this node's own (published anew from its pods)")
	}
	if err := d.vet(r); err != nil {
		return err
	}
	if have, ok := d.record(k); ok && have.Version >= r.Version {
		return nil
	}
	d.put(r)
	return nil
}
