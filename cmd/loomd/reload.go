package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/loomnet/loom/agent"
	"go.uber.org/zap"
)

// errReload ends a run that SIGHUP asked to reload: loomd starts again in
// place, with the same arguments, and reads its configuration anew.
var errReload = errors.New("reload requested (SIGHUP)")

// reloadOnHangup returns a context that ends when SIGHUP arrives and the
// configuration, read anew from args, the --config file and the LOOM_*
// variables, passes every check loomd makes at start; reloading reports
// whether it ended so. A configuration that fails is refused with the
// reason, and loomd runs on with the one it has: a bad edit followed by
// `systemctl reload loomd` never leaves the node without its agent.
func reloadOnHangup(ctx context.Context, log *zap.Logger, args []string) (context.Context, func() bool) {
	ctx, cancel := context.WithCancelCause(ctx)
	var reloading atomic.Bool
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if err := checkConfig(args); err != nil {
				log.Error("reload refused: the configuration read anew fails loomd's checks; running on with the one loaded at start", zap.Error(err))
				continue
			}
			log.Info("reloading: loomd starts again in place with the configuration read anew (data plane and pods stay)")
			reloading.Store(true)
			cancel(errReload)
			return
		}
	}()
	return ctx, reloading.Load
}

// checkConfig reads the configuration from args as a start would and
// checks it with agent.Check, changing nothing.
func checkConfig(args []string) error {
	cmd := newCommand(agent.Check)
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	return cmd.Execute()
}
