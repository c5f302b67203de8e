package rig

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ownerPID extracts the creating PID from a rig name ("loomt<pid>-...").
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	return pid, err == nil && pid > 0
}

func alive(pid int) bool { return syscall.Kill(pid, 0) != syscall.ESRCH }

// Sweep removes namespaces and temp dirs left by rigs whose process is gone
// (a test run that was killed before it could clean up).
func Sweep(logf func(string, ...any)) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if pid, ok := ownerPID(e.Name()); ok && !alive(pid) {
			logf("sweeping leftover namespace %s", e.Name())
			removeNetns(e.Name())
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), NamePrefix+"*"))
	for _, d := range dirs {
		if pid, ok := ownerPID(filepath.Base(d)); ok && !alive(pid) {
			os.RemoveAll(d)
		}
	}
}

// removeNetns kills every process inside the namespace (agents, pods'
// servers), then deletes it.
func removeNetns(name string) error {
	path := filepath.Join("/run/netns", name)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err == nil {
		want := fmt.Sprintf("net:[%d]", st.Ino)
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && link == want {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_, err := Run("ip", "netns", "del", name)
	return err
}
