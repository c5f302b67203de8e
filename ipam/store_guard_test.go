package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// storeWithPods writes a state database holding a lease and n pods, enough
// for bbolt to spread the pods over several pages under a branch page, and
// returns its bytes.
func storeWithPods(t *testing.T, n int) []byte {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	sub := netip.MustParsePrefix("10.1.2.0/24")
	for i := range n {
		if _, _, err := s.Allocate(sub, Allocation{ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveLease(OwnLease{Subnet: sub, Epoch: 3, Owner: "n1"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := os.ReadFile(filepath.Join(dir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stateDir returns a new state directory holding db as its database.
func stateDir(t *testing.T, db []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StoreFile), db, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCorruptStoreIsRefusedByName: a state database damaged on disk makes
// OpenStore return an error naming the file, where bbolt alone would
// fault on a page number past the end of the file and kill loomd with a
// stack trace, at every restart.
func TestCorruptStoreIsRefusedByName(t *testing.T) {
	good := storeWithPods(t, 100)

	// A branch page's first child pointing far past the end of the file.
	const pageSize, branchPage = 4096, 0x01
	pointer := append([]byte(nil), good...)
	found := false
	for off := 2 * pageSize; off+pageSize <= len(pointer); off += pageSize {
		if binary.LittleEndian.Uint16(pointer[off+8:]) == branchPage {
			// page header: id 8, flags 2, count 2, overflow 4; then the
			// first element: pos 4, ksize 4, pgid 8.
			binary.LittleEndian.PutUint64(pointer[off+16+8:], 1<<40)
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no branch page in the database: the test needs more pods")
	}

	// A pod allocation that no longer decodes.
	dir := stateDir(t, good)
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPods).Put(podKey("c050", "eth0"), []byte(`{"ip":"10.1.2.`))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	record, err := os.ReadFile(filepath.Join(dir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, want string
		db         []byte
	}{
		{"page pointer past the end", "", pointer},
		{"undecodable allocation", `decode allocation "c050/eth0"`, record},
	} {
		dir := stateDir(t, tc.db)
		s, err := OpenStore(dir)
		if err == nil {
			s.Close()
			t.Errorf("%s: opened", tc.name)
			continue
		}
		path := filepath.Join(dir, StoreFile)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) ||
			!strings.Contains(err.Error(), "move it aside") {
			t.Errorf("%s: %v; want ErrCorrupt naming %s, %q and the remedy", tc.name, err, path, tc.want)
		}
		if after, err := os.ReadFile(path); err != nil || string(after) != string(tc.db) {
			t.Errorf("%s: the refused file was changed (%v)", tc.name, err)
		}
	}
}

// TestDamagedStoreNeverCrashes flips a few bytes of a database at a time,
// many times over, and uses it as the agent does at start and for a CNI
// ADD. Each use must succeed or return an error; a fault or a bbolt panic
// fails the whole test binary.
func TestDamagedStoreNeverCrashes(t *testing.T) {
	good := storeWithPods(t, 100)
	used := len(good)
	for used > 0 && good[used-1] == 0 {
		used-- // flip bytes where the data is, not in the zeroed tail
	}
	refused, failed := 0, 0
	for seed := range 500 {
		rnd := rand.New(rand.NewSource(int64(seed)))
		db := append([]byte(nil), good...)
		for range 1 + rnd.Intn(8) {
			db[rnd.Intn(used)] = byte(rnd.Intn(256))
		}
		s, err := OpenStore(stateDir(t, db))
		if err != nil {
			refused++
			continue
		}
		_, _, err1 := s.LoadLease()
		_, err2 := s.Allocations()
		_, err3 := s.StartBoot("boot")
		_, _, err4 := s.Allocate(netip.MustParsePrefix("10.1.2.0/24"), Allocation{ContainerID: "new", IfName: "eth0"})
		_, _, err5 := s.Release("c001", "eth0")
		if errors.Join(err1, err2, err3, err4, err5) != nil {
			failed++
		}
		s.Close()
	}
	t.Logf("500 damaged databases: %d refused at open, %d failed in use", refused, failed)
	if refused == 0 {
		t.Error("no damaged database was refused at open: the damage does not reach the data")
	}
}
