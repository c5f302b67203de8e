package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/loomnet/loom/api"
)

// agentError maps an API failure to a CNI error: an agent that cannot be
// reached or is not ready yet means "try again later" (11), which makes
// runtimes retry instead of failing the pod for good.
func agentError(op string, c *api.Client, err error) error {
	var ae *api.Error
	switch {
	case errors.Is(err, api.ErrUnreachable):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: loom agent not reachable at %s (is loomd running?)", op, c.Socket()), err.Error())
	case errors.As(err, &ae) && ae.Code == api.CodeNotReady:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: loom agent not ready: %s", op, ae.Message), "")
	case errors.As(err, &ae) && ae.Code == api.CodeSubnetExhausted:
		return types.NewError(ErrCodeSubnetExhausted, fmt.Sprintf("%s: %s", op, ae.Message), "")
	case errors.As(err, &ae) && ae.Code == api.CodeBadRequest:
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("%s: %s", op, ae.Message), "")
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("%s: %s", op, ae.Message), "")
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", op, err), "")
}
