package ipam

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrSubnetExhausted is returned when every pod address of the subnet is in use.
var ErrSubnetExhausted = errors.New("subnet exhausted")

// Allocation is one pod attachment's address, keyed by container ID and
// interface name as the CNI spec keys attachments.
type Allocation struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	IP          netip.Addr   `json:"ip"`
	Subnet      netip.Prefix `json:"subnet"`
	HostIf      string       `json:"hostIf"`
	Netns       string       `json:"netns,omitempty"`
	Created     time.Time    `json:"created"`
	// Namespace, Name and Labels are what network policies select the
	// pod by.
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// UID is the Pod object's UID when the runtime said it.
	UID string `json:"uid,omitempty"`
}

func podKey(containerID, ifName string) []byte {
	return []byte(containerID + "/" + ifName)
}

// PodRange is the usable pod addresses of a node subnet: everything but the
// first address (the node's overlay address) and the last (broadcast).
func PodRange(subnet netip.Prefix) (first, last netip.Addr) {
	base := binary.BigEndian.Uint32(subnet.Addr().AsSlice())
	size := uint32(1) << (32 - subnet.Bits())
	return u32Addr(base + 1), u32Addr(base + size - 2)
}

// PodCapacity is how many pods a node subnet holds.
func PodCapacity(subnet netip.Prefix) int { return 1<<(32-subnet.Bits()) - 2 }

func u32Addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func addrU32(a netip.Addr) uint32 { return binary.BigEndian.Uint32(a.AsSlice()) }

// Allocate returns the allocation for (containerID, ifName) in subnet,
// creating it if needed. Asking again for an existing key returns the
// existing allocation, so a retried ADD never takes a second address.
// Addresses are handed out round-robin after the last one given, so a
// just-freed address is the last to be reused.
func (s *Store) Allocate(subnet netip.Prefix, req Allocation) (out Allocation, existing bool, err error) {
	containerID, ifName := req.ContainerID, req.IfName
	err = s.update(func(tx *bolt.Tx) error {
		pods := tx.Bucket(bucketPods)
		key := podKey(containerID, ifName)
		if v := pods.Get(key); v != nil {
			existing = true
			return json.Unmarshal(v, &out)
		}
		used := map[netip.Addr]bool{}
		if err := eachAllocation(pods, func(_ []byte, a Allocation) error {
			used[a.IP] = true
			return nil
		}); err != nil {
			return fmt.Errorf("read allocations: %w", err)
		}
		first, last := PodRange(subnet)
		lo, hi := addrU32(first), addrU32(last)
		start := lo
		if c := tx.Bucket(bucketMeta).Get(keyCursor); len(c) == 4 {
			if v := binary.BigEndian.Uint32(c) + 1; v >= lo && v <= hi {
				start = v
			}
		}
		n := hi - lo + 1
		for i := uint32(0); i < n; i++ {
			cand := u32Addr(lo + (start-lo+i)%n)
			if used[cand] {
				continue
			}
			out = req
			out.IP, out.Subnet, out.Created = cand, subnet, time.Now().UTC().Truncate(time.Second)
			v, err := json.Marshal(out)
			if err != nil {
				return err
			}
			if err := pods.Put(key, v); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keyCursor, cand.AsSlice())
		}
		return fmt.Errorf("allocate pod address in %s: %w (%d addresses in use)", subnet, ErrSubnetExhausted, len(used))
	})
	return out, existing, err
}

// Release removes the allocation for (containerID, ifName). ok is false if
// there was none, which is not an error: DEL is idempotent.
func (s *Store) Release(containerID, ifName string) (a Allocation, ok bool, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		pods := tx.Bucket(bucketPods)
		key := podKey(containerID, ifName)
		v := pods.Get(key)
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		ok = true
		return pods.Delete(key)
	})
	return a, ok, err
}

var keyBoot = []byte("boot")

// StartBoot records the kernel's boot ID and, when the node has rebooted
// since the last one recorded, releases every allocation in the same
// transaction and returns them: network namespaces do not survive a
// reboot, so every pod of the earlier boot is gone, and runtimes do not
// all send the DEL that would free its address. An empty boot ID (unknown)
// changes nothing, and neither does the first boot recorded.
func (s *Store) StartBoot(bootID string) (released []Allocation, err error) {
	if bootID == "" {
		return nil, nil
	}
	err = s.update(func(tx *bolt.Tx) error {
		meta, pods := tx.Bucket(bucketMeta), tx.Bucket(bucketPods)
		if last := meta.Get(keyBoot); last != nil && string(last) != bootID {
			var keys [][]byte
			if err := eachAllocation(pods, func(k []byte, a Allocation) error {
				released = append(released, a)
				keys = append(keys, k)
				return nil
			}); err != nil {
				return err
			}
			for _, k := range keys {
				if err := pods.Delete(k); err != nil {
					return err
				}
			}
		}
		return meta.Put(keyBoot, []byte(bootID))
	})
	if err != nil {
		return nil, fmt.Errorf("record boot in %s: %w", s.path, err)
	}
	return released, nil
}

// Get returns the allocation for (containerID, ifName), if any.
func (s *Store) Get(containerID, ifName string) (a Allocation, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPods).Get(podKey(containerID, ifName))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &a)
	})
	return a, ok, err
}

// eachAllocation decodes every allocation of the pods bucket for fn.
func eachAllocation(pods *bolt.Bucket, fn func(key []byte, a Allocation) error) error {
	return pods.ForEach(func(k, v []byte) error {
		var a Allocation
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("decode allocation %q: %w", k, err)
		}
		return fn(k, a)
	})
}

// Allocations returns every allocation, sorted by address.
func (s *Store) Allocations() ([]Allocation, error) {
	var out []Allocation
	err := s.view(func(tx *bolt.Tx) error {
		return eachAllocation(tx.Bucket(bucketPods), func(_ []byte, a Allocation) error {
			out = append(out, a)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, err
}

// SetLabels replaces the labels of an existing allocation.
func (s *Store) SetLabels(containerID, ifName string, labels map[string]string) (a Allocation, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		pods := tx.Bucket(bucketPods)
		key := podKey(containerID, ifName)
		v := pods.Get(key)
		if v == nil {
			return fmt.Errorf("no allocation for container %s interface %s: %w", containerID, ifName, ErrNoAllocation)
		}
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		a.Labels = labels
		nv, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return pods.Put(key, nv)
	})
	return a, err
}

// ErrNoAllocation is returned for an attachment that has no address.
var ErrNoAllocation = errors.New("no such allocation")
