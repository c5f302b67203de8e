package cniplugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/loomnet/loom/api"
)

// cmdDel is idempotent: a missing netns, interface or allocation is
// success, so runtimes can retry DEL as often as they like.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := validateArgs(args, false); err != nil {
		return err
	}
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			if err := ip.DelLinkByName(args.IfName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
				return err
			}
			return nil
		})
		var nsErr ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &nsErr) {
			return types.NewError(types.ErrInternal, fmt.Sprintf("delete %s in %s", args.IfName, args.Netns), err.Error())
		}
	}
	client := api.NewClient(conf.Socket, apiTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := client.Release(ctx, api.PodRef{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return agentError("release address", client, err)
	}
	return nil
}
