package cniplugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/loomnet/loom/api"
)

// PodArgs are the CNI_ARGS Loom understands; kubelet passes the K8S_ ones.
// Unknown keys are allowed: runtimes pass keys for other plugins too.
type PodArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by kubelet
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// validateArgs checks what the runtime passed in the environment, with the
// spec's code 4 (invalid environment variables) for anything wrong.
func validateArgs(args *skel.CmdArgs, needNetns bool) (*PodArgs, error) {
	if args.ContainerID == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is empty", "")
	}
	if !api.ValidInterfaceName(args.IfName) {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q is not a valid interface name (1-15 bytes, no '/', ':' or spaces)", args.IfName), "")
	}
	if needNetns && args.Netns == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	pa := &PodArgs{}
	pa.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, pa); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS %q: %v", args.Args, err), "")
	}
	return pa, nil
}
