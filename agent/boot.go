package agent

import (
	"os"
	"strings"

	"github.com/loomnet/loom/ipam"
	"go.uber.org/zap"
)

// bootIDPath holds a random ID the kernel draws at every boot; it is the
// same in every network and mount namespace of one boot, so loomd in a
// container reads the host's.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// releasePreviousBoot frees the addresses of pods from before a reboot
// (see ipam.Store.StartBoot), before the first reconcile and before the
// API serves, so no ADD of this boot can be among them. A failure (a full
// disk) is logged, not fatal: the next start tries again.
func (a *Agent) releasePreviousBoot() {
	id, err := os.ReadFile(bootIDPath)
	if err == nil {
		var released []ipam.Allocation
		released, err = a.store.StartBoot(strings.TrimSpace(string(id)))
		if err == nil {
			a.logReleasedAtBoot(released)
			return
		}
	}
	a.log.Warn("cannot tell whether the node rebooted; pods of an earlier boot keep their addresses until the runtime's DEL or GC", zap.Error(err))
}

func (a *Agent) logReleasedAtBoot(released []ipam.Allocation) {
	if len(released) == 0 {
		return
	}
	addrs := make([]string, 0, min(len(released), 10))
	for _, al := range released[:cap(addrs)] {
		addrs = append(addrs, al.IP.String())
	}
	a.log.Info("node rebooted since loomd last ran: released the addresses of the earlier boot's pods",
		zap.Int("pods", len(released)), zap.Strings("first", addrs))
}
