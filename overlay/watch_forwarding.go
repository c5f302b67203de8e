package overlay

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// IPForwardKey is the sysctl that lets a node route between its pods, its
// tunnel and its underlay.
const IPForwardKey = "net/ipv4/ip_forward"

// netconf attributes (linux/netconf.h), which x/sys does not name.
const (
	netconfaIfindex    = 1
	netconfaForwarding = 2
	// netconfIfindexAll is the "all" pseudo-interface: net.ipv4.ip_forward.
	netconfIfindexAll = -1
)

// watchForwarding calls notify when IPv4 forwarding is switched off for
// the whole namespace: `sysctl --system` with an /etc/sysctl.conf that
// says ip_forward=0, or a hardening script, silently cuts every pod off
// other nodes until the next resync. The kernel announces the change on
// its IPv4 netconf group.
func watchForwarding(done <-chan struct{}, notify func(), onError func(error)) error {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_NETCONF)
	if err != nil {
		return fmt.Errorf("subscribe to IPv4 forwarding changes: %w", err)
	}
	go func() { <-done; s.Close() }()
	go func() {
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				onError(fmt.Errorf("receive IPv4 forwarding changes: %w", err))
				return
			}
			if from.Pid != nl.PidKernel {
				continue
			}
			for _, m := range msgs {
				if m.Header.Type == unix.RTM_NEWNETCONF && forwardingTurnedOff(m.Data) {
					notify()
				}
			}
		}
	}()
	return nil
}

// forwardingTurnedOff reports whether an RTM_NEWNETCONF payload says IPv4
// forwarding of the whole namespace is now off.
func forwardingTurnedOff(payload []byte) bool {
	const header = 4 // struct netconfmsg: one byte of family, aligned
	if len(payload) < header {
		return false
	}
	attrs, err := nl.ParseRouteAttr(payload[header:])
	if err != nil {
		return false
	}
	all, off := false, false
	for _, a := range attrs {
		if len(a.Value) < 4 {
			continue
		}
		v := int32(nl.NativeEndian().Uint32(a.Value))
		switch a.Attr.Type {
		case netconfaIfindex:
			all = v == netconfIfindexAll
		case netconfaForwarding:
			off = v == 0
		}
	}
	return all && off
}
