package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// PodRecord is what a node gossips about one of its pods so that other
// nodes can resolve selectors: the pod's address and its metadata. A
// deleted record (a tombstone) replaces the live one when the pod goes.
type PodRecord struct {
	Node      string            `json:"node"`
	IP        netip.Addr        `json:"ip"`
	Version   uint64            `json:"v"`
	Deleted   bool              `json:"deleted,omitempty"`
	Namespace string            `json:"ns,omitempty"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Since is when the address was given to this pod (unix seconds; 0
	// from agents that do not say): a record whose Since changed is
	// another pod at the address, even under the same name.
	Since int64 `json:"since,omitempty"`
	// UID is the Pod object's UID when the runtime said it (K8S_POD_UID):
	// a Pod recreated under the same name is another pod.
	UID string `json:"uid,omitempty"`
}

// Pod is the pod a record describes, as policies see it.
func (r PodRecord) Pod() Pod {
	return Pod{Namespace: r.Namespace, Name: r.Name, IP: r.IP, Labels: r.Labels, Node: r.Node, UID: r.UID}
}

// MaxPodRecordSize bounds one encoded record so that it always fits a
// single gossip broadcast.
const MaxPodRecordSize = 1024

// maxDirectoryUpdate bounds a push/pull state: 64 Ki records.
const maxDirectoryUpdate = 64 << 20

// relayNewsAtMost is the most records new here that one merge relays; a
// merge that brings more relays none of them. Only a push/pull brings that
// many (a broadcast carries one record), and then this node was behind
// (it joined, or was cut off), not its peers: they learn the same in their
// own push/pulls. Relaying a large fabric's directory, one broadcast per
// record, would fill every gossip packet for many minutes. Up to the
// limit relaying is kept: a node back from a partition passes on the pods
// its side started meanwhile within a second, where the next push/pulls
// take tens of seconds. Corrections of this node's own records always go
// out.
const relayNewsAtMost = 1024

type recordKey struct {
	node string
	ip   netip.Addr
}

// Directory is the replicated table of every node's pods. Each node is
// the only writer of its own records; versions are wall-clock nanoseconds
// bumped past the last version seen, so a restarted node's records
// supersede what it said before. Records are keyed by (node, address), so
// a node's share is bounded by its subnet; the nodes a fabric no longer
// knows are forgotten (see ForgetAfter). It implements
// gossip.StateExchanger.
type Directory struct {
	self     string
	validate func(PodRecord) error
	now      func() time.Time

	// mu guards the fields below.
	mu sync.Mutex
	// records holds each node's records by address: a reconcile reads
	// this node's own and those of the programmed peers, which must not
	// cost a walk over a large fabric's every pod.
	records map[string]map[netip.Addr]PodRecord
	// newest is the newest version held per node: when it last published.
	newest map[string]uint64
	// known and forgetAfter say whose records Forget drops (nil, 0: none).
	known       func(node string) bool
	forgetAfter time.Duration
	// onGone hears of another node's pod that is gone (nil: nobody).
	onGone func(ip netip.Addr)
	// unsaved are the other nodes' records changed since the last Unsaved,
	// and undecodable the saved keys that name no record (see Restore).
	unsaved     map[recordKey]bool
	undecodable []string
	// full is the full state push/pull sends, kept between them.
	full fullState
	// podsPublished counts PublishPod calls; pinned holds, by address,
	// the count at which PublishPod made a record of this node that no
	// PublishChanges has been given since (see Mark).
	podsPublished uint64
	pinned        map[netip.Addr]uint64
	// labelSets are the records' labels, one map per set; nodeNames the
	// records' node names, one string per node.
	labelSets *labelSets
	nodeNames map[string]string
}

// NewDirectory returns an empty directory for node self. validate vets
// each remote record (address in the cluster, metadata well formed). It
// keeps every node's records until ForgetAfter says otherwise.
func NewDirectory(self string, validate func(PodRecord) error) *Directory {
	return &Directory{self: self, validate: validate, now: time.Now,
		records: map[string]map[netip.Addr]PodRecord{}, newest: map[string]uint64{}, unsaved: map[recordKey]bool{},
		pinned: map[netip.Addr]uint64{}, labelSets: newLabelSets(), nodeNames: map[string]string{}}
}

// ForgetAfter makes the directory drop the records of a node it does not
// know (known says whether membership still lists a node, dead or
// alive) and that published nothing for d, and ignore such records when a
// peer sends them again. Without it a fabric that replaces its nodes
// would carry every pod any node ever had in every push/pull, for good.
// A node that is down but still known keeps its records however old: a
// restarting agent's pods keep their place in peers' policies.
func (d *Directory) ForgetAfter(known func(node string) bool, after time.Duration) {
	d.mu.Lock()
	d.known, d.forgetAfter = known, after
	d.mu.Unlock()
}

// OnPodGone makes the directory call f with the address of another node's
// pod when a peer says the pod is gone (deleted, or another pod has its
// address now). f is called during a merge, on gossip's goroutine: it
// must not block.
func (d *Directory) OnPodGone(f func(ip netip.Addr)) {
	d.mu.Lock()
	d.onGone = f
	d.mu.Unlock()
}

// forgettable reports whether the records of node, the newest published
// at version, are of a node gone long ago. Called with mu held.
func (d *Directory) forgettable(node string, version uint64) bool {
	if d.forgetAfter == 0 || d.known == nil || node == d.self {
		return false
	}
	// Asked for every record of a push/pull: the cheap test first.
	return version < uint64(d.now().Add(-d.forgetAfter).UnixNano()) && !d.known(node)
}

// Forget drops the records of nodes gone long ago (see ForgetAfter) and
// returns their names.
func (d *Directory) Forget() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	gone := map[string]bool{}
	for node, v := range d.newest {
		if d.forgettable(node, v) {
			gone[node] = true
			delete(d.newest, node)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	for node := range gone {
		for ip, r := range d.records[node] {
			d.markUnsaved(recordKey{node, ip})
			d.labelSets.drop(r.Labels)
		}
		delete(d.records, node)
		delete(d.nodeNames, node)
		d.staleNode(node)
	}
	return slices.Sorted(maps.Keys(gone))
}

// Count returns how many records the directory holds, live and deleted
// (tombstones), this node's own included.
func (d *Directory) Count() (live, deleted int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, held := range d.records {
		for _, r := range held {
			if r.Deleted {
				deleted++
			} else {
				live++
			}
		}
	}
	return live, deleted
}

// store puts r in the table. Called with mu held.
func (d *Directory) store(r PodRecord) {
	d.markUnsaved(d.put(r))
}

// put puts r in the table without noting it unsaved (see Restore).
// Called with mu held.
func (d *Directory) put(r PodRecord) recordKey {
	held := d.records[r.Node]
	if held == nil {
		held = map[netip.Addr]PodRecord{}
		d.records[r.Node] = held
		d.nodeNames[r.Node] = r.Node
	}
	if old, ok := held[r.IP]; ok {
		d.labelSets.drop(old.Labels)
	}
	// Many records: one copy of what they have in common.
	r.Node = d.nodeNames[r.Node]
	r.Labels = d.labelSets.share(r.Labels)
	held[r.IP] = r
	d.staleNode(r.Node)
	d.newest[r.Node] = max(d.newest[r.Node], r.Version)
	return recordKey{r.Node, r.IP}
}

// record returns the record held under k. Called with mu held.
func (d *Directory) record(k recordKey) (PodRecord, bool) {
	r, ok := d.records[k.node][k.ip]
	return r, ok
}

// ValidateRecord checks a record's structure and metadata.
func ValidateRecord(r PodRecord) error {
	if r.Node == "" || len(r.Node) > 128 {
		return errors.New("pod record: node name must be 1..128 bytes")
	}
	if !r.IP.Is4() {
		return fmt.Errorf("pod record of %s: address %v is not IPv4", r.Node, r.IP)
	}
	if r.Version == 0 {
		return fmt.Errorf("pod record %s/%s: version 0", r.Node, r.IP)
	}
	if r.Deleted {
		return nil
	}
	if err := ValidPodMeta(r.Namespace, r.Name, r.Labels); err != nil {
		return fmt.Errorf("pod record %s/%s: %w", r.Node, r.IP, err)
	}
	if err := ValidPodUID(r.UID); err != nil {
		return fmt.Errorf("pod record %s/%s: %w", r.Node, r.IP, err)
	}
	return nil
}

// vet checks a record from outside this process (a peer's, or one saved
// at the last run): its structure and metadata, then validate.
func (d *Directory) vet(r PodRecord) error {
	if err := ValidateRecord(r); err != nil {
		return err
	}
	if d.validate != nil {
		return d.validate(r)
	}
	return nil
}

// EncodeRecord encodes one record as a gossip update, refusing records
// too large for one broadcast.
func EncodeRecord(r PodRecord) ([]byte, error) {
	b, err := json.Marshal([]PodRecord{r})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPodRecordSize {
		return nil, fmt.Errorf("pod %s/%s: metadata encodes to %d bytes, more than the %d a gossip message carries (fewer or shorter labels)",
			r.Namespace, r.Name, len(b), MaxPodRecordSize)
	}
	return b, nil
}

// MergeRemoteState implements gossip.StateExchanger. Records about this
// node are never taken from others: if a peer still holds one this node
// no longer agrees with (from before a restart), the answer is a newer
// record that corrects it. It relays those corrections, and the records
// new here unless there are many (see relayNewsAtMost).
func (d *Directory) MergeRemoteState(buf []byte) ([][]byte, bool, error) {
	if len(buf) > maxDirectoryUpdate {
		return nil, false, fmt.Errorf("pod directory update of %d bytes exceeds %d", len(buf), maxDirectoryUpdate)
	}
	in, err := decodeRecords(buf)
	if err != nil {
		return nil, false, err
	}
	return d.mergeRecords(in)
}

func decodeRecords(buf []byte) ([]PodRecord, error) {
	var in []PodRecord
	if err := json.Unmarshal(buf, &in); err != nil {
		return nil, fmt.Errorf("decode pod directory update: %w", err)
	}
	return in, nil
}

// mergeRecords merges records from a peer (see MergeRemoteState).
func (d *Directory) mergeRecords(in []PodRecord) ([][]byte, bool, error) {
	var fixes, news [][]byte
	var errs []error
	d.mu.Lock()
	defer d.mu.Unlock()
	// What a peer sends of a node forgotten here (or never known, and
	// silent that long) is ignored as a whole, or it would come back.
	sent := map[string]uint64{}
	for _, r := range in {
		sent[r.Node] = max(sent[r.Node], r.Version)
	}
	for _, r := range in {
		if d.forgettable(r.Node, max(sent[r.Node], d.newest[r.Node])) {
			continue
		}
		k := recordKey{r.Node, r.IP}
		have, ok := d.record(k)
		// A record no newer than the one held changes nothing: vetting
		// it (label syntax) was most of a large push/pull's merge.
		if r.Node != d.self && ok && have.Version >= r.Version {
			continue
		}
		if err := d.vet(r); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.Node == d.self {
			if (ok && sameRecord(have, r)) || (!ok && r.Deleted) {
				continue
			}
			// A peer holds a record of ours this node disagrees with, from
			// before a restart: supersede it with what is true now.
			fix := have
			if !ok {
				fix = PodRecord{Node: d.self, IP: r.IP, Deleted: true}
			}
			fix.Version = d.nextVersion(max(r.Version, have.Version))
			d.store(fix)
			if b, err := EncodeRecord(fix); err == nil {
				fixes = append(fixes, b)
			}
			continue
		}
		if ok && !have.Deleted && d.onGone != nil && (r.Deleted || replaced(have, r)) {
			d.onGone(r.IP)
		}
		d.store(r)
		if b, err := EncodeRecord(r); err == nil {
			news = append(news, b)
		}
	}
	changed := len(fixes)+len(news) > 0
	if len(news) > relayNewsAtMost {
		news = nil
	}
	return append(fixes, news...), changed, errors.Join(errs...)
}

func sameRecord(a, b PodRecord) bool {
	return a.Deleted == b.Deleted && a.Since == b.Since && a.UID == b.UID && !replaced(a, b) && maps.Equal(a.Labels, b.Labels)
}

// replaced reports whether two live records of one address are of two
// pods: another name, another Pod UID, or the same name given the address
// anew (a runtime that names no pods, or one that recreated it while this
// node missed the first one's deletion). A Since of 0 (an older agent's
// record, or one published before it said) or a UID not said is no
// evidence either way.
func replaced(was, now PodRecord) bool {
	return was.Namespace != now.Namespace || was.Name != now.Name ||
		(was.Since != 0 && now.Since != 0 && was.Since != now.Since) ||
		!SamePodUID(was.UID, now.UID)
}

// SamePodUID reports whether two UIDs may be of one Pod object: equal,
// or either not said.
func SamePodUID(a, b string) bool {
	return a == "" || b == "" || a == b
}

// nextVersion returns a version newer than after and than the clock.
func (d *Directory) nextVersion(after uint64) uint64 {
	v := uint64(d.now().UnixNano())
	if v <= after {
		v = after + 1
	}
	return v
}

// Publish makes local (this node's current pods) the node's records:
// new and changed pods get a new version, pods no longer present become
// tombstones. It returns the updates to broadcast.
func (d *Directory) Publish(local []PodRecord) [][]byte {
	return d.PublishChanges(local, math.MaxUint64).Updates
}

// Publication is what one Publish changed.
type Publication struct {
	// Updates are the records to broadcast, one each.
	Updates [][]byte
	// Pods are the pods the updates concern as policies see them: each
	// new or changed record, and each live record it replaced or ended.
	// Whoever selected the pod before or selects it now must learn of it.
	Pods []PodRecord
}

// Mark is taken before reading the list of local pods given to
// PublishChanges: the records PublishPod makes after it may be newer than
// the list (a pod allocated or relabelled meanwhile), and PublishChanges
// leaves them alone rather than take them back.
func (d *Directory) Mark() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.podsPublished
}

// PublishChanges is Publish of a list read after listed (see Mark), saying
// which pods its updates concern.
func (d *Directory) PublishChanges(local []PodRecord, listed uint64) Publication {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out Publication
	want := map[netip.Addr]PodRecord{}
	for _, r := range local {
		want[r.IP] = r
	}
	// A pin older than the list is in it; a newer one holds a record the
	// list may not have yet, which stays as it is.
	for ip, n := range d.pinned {
		if n > listed {
			delete(want, ip)
		} else {
			delete(d.pinned, ip)
		}
	}
	for ip, have := range d.records[d.self] {
		_, wanted := want[ip]
		_, pinned := d.pinned[ip]
		if wanted || pinned || have.Deleted {
			continue
		}
		tomb := PodRecord{Node: d.self, IP: ip, Deleted: true, Version: d.nextVersion(have.Version)}
		d.store(tomb)
		if b, err := EncodeRecord(tomb); err == nil {
			out.Updates = append(out.Updates, b)
			out.Pods = append(out.Pods, have)
		}
	}
	for _, r := range want {
		d.publish(r, &out)
	}
	return out
}

// PublishPod makes r this node's record of its address, leaving its other
// records as they are: for a pod just given its address or new labels,
// published before the next Publish, which reads them all. A list of
// local pods read before this (see Mark) does not take it back.
func (d *Directory) PublishPod(r PodRecord) Publication {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.podsPublished++
	d.pinned[r.IP] = d.podsPublished
	var out Publication
	d.publish(r, &out)
	return out
}

// publish makes r this node's record of its address unless it already
// is, adding what changed to out. Called with mu held.
func (d *Directory) publish(r PodRecord, out *Publication) {
	r.Node = d.self
	have, ok := d.record(recordKey{d.self, r.IP})
	if ok && sameRecord(have, r) {
		return
	}
	r.Version = d.nextVersion(have.Version)
	b, err := EncodeRecord(r)
	if err != nil {
		return // refused at ADD or label time; never half-published
	}
	d.store(r)
	out.Updates = append(out.Updates, b)
	out.Pods = append(out.Pods, r)
	if ok && !have.Deleted {
		out.Pods = append(out.Pods, have)
	}
}

// PodsIn yields the pods of the live records of the nodes subnets names
// whose addresses are in that node's subnets: the pods policies may
// select. It reads only those nodes' records, in no order, and copies
// none that the caller does not take: a new pod's publish reads until it
// has found enough (see Watchers), where copying 100,000 records took
// 50 ms. The directory is locked while they are read.
func (d *Directory) PodsIn(subnets map[string][]netip.Prefix) iter.Seq[Pod] {
	return func(yield func(Pod) bool) {
		d.mu.Lock()
		defer d.mu.Unlock()
		for node, prefixes := range subnets {
			if node == d.self {
				continue
			}
			for ip, r := range d.records[node] {
				if !r.Deleted && slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) && !yield(r.Pod()) {
					return
				}
			}
		}
	}
}
