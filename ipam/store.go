package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// StoreFile is the name of the agent's state database inside --state-dir.
const StoreFile = "loom.db"

var (
	bucketLease = []byte("lease")
	bucketPods  = []byte("pods")
	bucketMeta  = []byte("meta")
	keyLease    = []byte("own")
	keyCursor   = []byte("cursor")
)

// Store is the agent's crash-safe local state: its own subnet lease and its
// pod allocations. bbolt commits each transaction with fsync, so a SIGKILL
// at any point leaves either the old or the new state, never a mix.
type Store struct {
	db   *bolt.DB
	path string
}

// OwnLease is the subnet this node holds, persisted so a restart reuses it.
type OwnLease struct {
	Subnet netip.Prefix `json:"subnet"`
	Epoch  uint64       `json:"epoch"`
	// Owner is the node name the lease was claimed under; empty in state
	// written before it was recorded.
	Owner string `json:"owner,omitempty"`
}

// HeldBy reports whether the lease may be reused by the node called name:
// a state directory copied to another machine (a disk image made from a
// running node) or kept across a rename holds another name's lease, and
// reusing it would take that node's subnet.
func (l OwnLease) HeldBy(name string) bool { return l.Owner == "" || l.Owner == name }

// OpenStore opens (creating if needed) the state database in dir.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, StoreFile)
	var db *bolt.DB
	err := guarded(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
		return err
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: locked by another process (is another loomd using this --state-dir?)", path)
		}
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("open state: %w", err)
		}
		return nil, fmt.Errorf("open state %s: %w (if the file is corrupt, move it aside; the agent then rejoins and reclaims its subnet from gossip)", path, err)
	}
	s := &Store{db: db, path: path}
	if err = s.view(readAll); err != nil && !errors.Is(err, ErrCorrupt) {
		err = corrupt(path, err)
	}
	if err == nil {
		err = s.update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketLease, bucketPods, bucketMeta, bucketDirectory} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		db.Close()
		if errors.Is(err, ErrCorrupt) {
			return nil, fmt.Errorf("open state: %w", err)
		}
		return nil, fmt.Errorf("initialise state %s: %w", path, err)
	}
	return s, nil
}

// Close releases the database (and its file lock).
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.path }

// LoadLease returns the persisted own lease; ok is false when there is none.
func (s *Store) LoadLease() (l OwnLease, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLease).Get(keyLease)
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("decode persisted lease in %s: %w", s.path, err)
		}
		ok = true
		return nil
	})
	return l, ok, err
}

// SaveLease persists the own lease.
func (s *Store) SaveLease(l OwnLease) error {
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketLease).Put(keyLease, v) })
}

// DeleteLease forgets the own lease (the node left the fabric).
func (s *Store) DeleteLease() error {
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketLease).Delete(keyLease) })
}

var keyPeers = []byte("peers")

// SavePeers remembers the underlay addresses of the last known peers, so a
// restarted node can find the fabric again even if it was started without
// --join (it bootstrapped it) or its --join targets are down.
func (s *Store) SavePeers(addrs []string) error { return s.putMeta(keyPeers, addrs) }

// LoadPeers returns what SavePeers stored.
func (s *Store) LoadPeers() ([]string, error) {
	var out []string
	return out, s.getMeta(keyPeers, &out)
}

var keyHolders = []byte("holders")

// SaveHolders remembers which node held each subnet when the data plane
// was last programmed, so that a restarted agent sees the subnets that
// changed hands while it was down (see LoadHolders).
func (s *Store) SaveHolders(holders map[netip.Prefix]string) error {
	return s.putMeta(keyHolders, holders)
}

// LoadHolders returns what SaveHolders stored; nil when nothing was.
func (s *Store) LoadHolders() (map[netip.Prefix]string, error) {
	var out map[netip.Prefix]string
	return out, s.getMeta(keyHolders, &out)
}

// putMeta stores v as JSON under key of the meta bucket.
func (s *Store) putMeta(key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(key, b) })
}

// getMeta decodes the JSON under key of the meta bucket into out, leaving
// it as it is when there is none.
func (s *Store) getMeta(key []byte, out any) error {
	return s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(key)
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, out); err != nil {
			return fmt.Errorf("read %s from %s: %w", key, s.path, err)
		}
		return nil
	})
}

var keyClaims = []byte("claims")

// SavedClaims is the lease table as a node last saved it, and when.
type SavedClaims struct {
	At     time.Time `json:"at"`
	Claims []Claim   `json:"claims"`
}

// SaveClaims remembers the lease table, so that a node restarted while
// others are down still knows the subnets they hold (see LoadClaims).
func (s *Store) SaveClaims(saved SavedClaims) error { return s.putMeta(keyClaims, saved) }

// LoadClaims returns what SaveClaims stored; ok is false when nothing was.
func (s *Store) LoadClaims() (saved SavedClaims, ok bool, err error) {
	err = s.getMeta(keyClaims, &saved)
	return saved, !saved.At.IsZero(), err
}
