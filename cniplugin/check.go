package cniplugin

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/api"
	"github.com/vishvananda/netlink"
)

// cmdCheck verifies that the attachment is still what ADD made: the
// agent's allocation, the host veth, and the pod's interface, address and
// routes. Each failure says what drifted.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := validateArgs(args, true); err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	alloc, err := client.Get(ctx, api.PodRef{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return agentError("check allocation", client, err)
	}
	if alloc.Stale {
		return types.NewError(types.ErrInternal, fmt.Sprintf("pod address %s belongs to subnet %s, which this node no longer owns; recreate the pod", alloc.IP, alloc.Subnet), "")
	}
	hostLink, err := netlinksafe.LinkByName(alloc.HostIf)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %s of the pod is missing", alloc.HostIf), err.Error())
	}
	podNet, err := netlink.ParseIPNet(alloc.IP)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent returned invalid address %q", alloc.IP), err.Error())
	}
	hostRoutes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: podNet}, netlink.RT_FILTER_DST)
	if err != nil {
		return types.NewError(types.ErrInternal, "list host routes", err.Error())
	}
	if len(hostRoutes) != 1 || hostRoutes[0].LinkIndex != hostLink.Attrs().Index {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host route to pod %s via %s is missing or points elsewhere", alloc.IP, alloc.HostIf), "")
	}
	var podIPs []*current.IPConfig
	for _, c := range prev.IPs {
		if c.Address.String() != alloc.IP {
			return types.NewError(types.ErrInternal, fmt.Sprintf("prevResult address %s differs from the agent's %s", c.Address.String(), alloc.IP), "")
		}
		podIPs = append(podIPs, c)
	}
	netns, err := openNetns(args.Netns)
	if err != nil {
		return err
	}
	defer netns.Close()
	err = netns.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("pod interface %s is missing: %w", args.IfName, err)
		}
		if _, ok := link.(*netlink.Veth); !ok {
			return fmt.Errorf("pod interface %s is a %s, not a veth", args.IfName, link.Type())
		}
		// plugins/pkg/ip's address check looks for a connected route, which a
		// /32 pod address never has; check address and routes directly.
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", args.IfName, err)
		}
		for _, want := range podIPs {
			found := false
			for _, a := range addrs {
				if a.IPNet.String() == want.Address.String() {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("address %s is missing from %s", want.Address.String(), args.IfName)
			}
		}
		gw := net.ParseIP(alloc.Gateway)
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
		if err != nil {
			return fmt.Errorf("list routes of %s: %w", args.IfName, err)
		}
		var haveGwRoute, haveDefault bool
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == gw.String()+"/32" && r.Scope == netlink.SCOPE_LINK {
				haveGwRoute = true
			}
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw) {
				haveDefault = true
			}
		}
		if !haveGwRoute {
			return fmt.Errorf("route to gateway %s on %s is missing", gw, args.IfName)
		}
		if !haveDefault {
			return fmt.Errorf("default route via %s on %s is missing", gw, args.IfName)
		}
		return nil
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "pod network drifted", err.Error())
	}
	return nil
}
