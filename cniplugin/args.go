package cniplugin

import (
	"fmt"
	"strings"

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
	// LOOM_POD_LABELS carries labels for network policy where no
	// Kubernetes API says them: "key:value,key:value".
	LOOM_POD_LABELS types.UnmarshallableString //nolint:revive
}

// Meta returns the pod metadata the arguments carry.
func (a *PodArgs) Meta() (api.PodMeta, error) {
	m := api.PodMeta{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME), UID: string(a.K8S_POD_UID)}
	labels, err := ParseLabels(string(a.LOOM_POD_LABELS))
	if err != nil {
		return m, err
	}
	m.Labels = labels
	return m, nil
}

// ParseLabels parses "key:value,key:value" (also "key=value"); an empty
// string is no labels. The agent validates keys and values.
func ParseLabels(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		i := strings.IndexAny(kv, ":=")
		if i <= 0 {
			return nil, fmt.Errorf("label %q: want key:value", kv)
		}
		k, v := kv[:i], kv[i+1:]
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// validateArgs checks what the runtime passed in the environment, with the
// spec's code 4 (invalid environment variables) for anything wrong, and
// returns the pod metadata CNI_ARGS carry.
func validateArgs(args *skel.CmdArgs, needNetns bool) (api.PodMeta, error) {
	if args.ContainerID == "" {
		return api.PodMeta{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is empty", "")
	}
	if !api.ValidInterfaceName(args.IfName) {
		return api.PodMeta{}, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("CNI_IFNAME %q is not a valid interface name (1-15 bytes, no '/', ':' or spaces)", args.IfName), "")
	}
	if needNetns && args.Netns == "" {
		return api.PodMeta{}, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is empty", "")
	}
	pa := &PodArgs{}
	pa.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, pa); err != nil {
		return api.PodMeta{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS %q: %v", args.Args, err), "")
	}
	meta, err := pa.Meta()
	if err != nil {
		return api.PodMeta{}, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS LOOM_POD_LABELS: %v", err), "")
	}
	return meta, nil
}
