package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// MaxClockOffset is how far a peer's clock may be from this node's before
// loomd warns. Lease reservations and their expiry (--lease-ttl) are wall
// clock times that every node reads with its own clock: a node whose
// clock runs hours ahead sees reservations lapse early and may claim a
// dead node's subnet while its peers still hold it reserved.
const MaxClockOffset = 30 * time.Second

// clockFrame is what a node sends in every push/pull: when it sent it
// (unix nanoseconds) and its name. Push/pull runs over TCP between two
// nodes, so the time it takes is milliseconds, far below MaxClockOffset.
func (m *Membership) clockFrame() []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(m.now().UnixNano())), m.name...)
}

// noteClock records how far the sender's clock is from this node's at
// received, when its push/pull arrived, and warns (once per peer in a
// while) when it is too far.
func (m *Membership) noteClock(frame []byte, received time.Time) error {
	if len(frame) < 9 || len(frame) > 8+255 {
		return errors.New("clock frame malformed")
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(frame)))
	name := string(frame[8:])
	if name == m.name {
		return nil
	}
	offset := sent.Sub(received).Round(time.Millisecond)
	m.peersMu.Lock()
	if m.clockOffsets == nil {
		m.clockOffsets = map[string]time.Duration{}
	}
	m.clockOffsets[name] = offset
	var worst time.Duration
	for peer, o := range m.clockOffsets {
		if _, known := m.peers[peer]; !known {
			delete(m.clockOffsets, peer) // forgotten, or never valid
			continue
		}
		worst = max(worst, o.Abs())
	}
	m.peersMu.Unlock()
	m.metrics.ClockOffset.Set(worst.Seconds())
	if offset.Abs() > MaxClockOffset && m.rejected.fresh(fmt.Sprintf("clock of %s", name), m.now()) {
		m.log.Warn("a peer's clock differs from this node's: lease reservations expire at different times on each; run NTP (chrony, systemd-timesyncd) on every node",
			zap.String("node", name), zap.Duration("offset", offset), zap.Duration("tolerated", MaxClockOffset))
	}
	return nil
}
