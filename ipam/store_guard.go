package ipam

import (
	"errors"
	"fmt"
	"hash/crc32"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt marks a state database that cannot be read as bbolt wrote it.
var ErrCorrupt = errors.New("state database is corrupt")

// guarded runs op, which reads or writes the database at path, and turns
// what a damaged file does to bbolt into an error. bbolt reads pages
// straight from its memory map: a page number pointing past the end of
// the file faults, which kills the process unless the goroutine asked for
// a panic instead, and bbolt's own invariant checks panic. Either would
// leave loomd in a crash loop with a stack trace instead of a line that
// names the file. bbolt's View and Update roll back on the way out, so the
// database stays usable (and refusing) after a recovered fault.
func guarded(path string, op func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(path, p)
		}
	}()
	return op()
}

// corrupt says what is wrong with the database at path and what to do.
func corrupt(path string, why any) error {
	return fmt.Errorf("%w: %s: %v (move it aside to start afresh: the agent then rejoins and reclaims its subnet from gossip, but forgets the addresses of the pods it runs)", ErrCorrupt, path, why)
}

// view runs fn in a read transaction, guarded.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return guarded(s.path, func() error { return s.db.View(fn) })
}

// update runs fn in a write transaction, guarded.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	return guarded(s.path, func() error { return s.db.Update(fn) })
}

// readAll reads every key and value of Loom's buckets once, so that
// damage anywhere in them is found when the store opens rather than at
// the first CNI ADD or restart that reaches it. Hashing every byte is
// what reads them: the sum itself is not kept (a few MiB at most, other
// nodes' pod records included, so milliseconds). It runs before anything
// is written, so a refused file is left as it was found. Pod allocations
// are decoded too: one that cannot be would make every later read of
// them fail, and with it the routes and rules of the pods behind it.
func readAll(tx *bolt.Tx) error {
	var sum uint32
	for _, name := range [][]byte{bucketLease, bucketPods, bucketMeta, bucketDirectory} {
		b := tx.Bucket(name)
		if b == nil {
			continue // a new database: OpenStore creates it
		}
		if err := b.ForEach(func(k, v []byte) error {
			sum = crc32.Update(crc32.Update(sum, crc32.IEEETable, k), crc32.IEEETable, v)
			return nil
		}); err != nil {
			return err
		}
	}
	if pods := tx.Bucket(bucketPods); pods != nil {
		return eachAllocation(pods, func([]byte, Allocation) error { return nil })
	}
	return nil
}
