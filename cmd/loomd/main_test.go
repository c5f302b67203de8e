package main

import (
	"os"
	"testing"
)

// TestShippedConfigFilesLoad: the example configuration the systemd unit
// starts loomd with is read as loomd reads it, so a flag renamed or
// dropped fails here rather than on a host at boot.
func TestShippedConfigFilesLoad(t *testing.T) {
	if code := runQuiet(t, "--config", "../../deploy/systemd/loom.yaml", "--print-config"); code != 0 {
		t.Fatalf("loomd --config deploy/systemd/loom.yaml --print-config exited %d", code)
	}
	if code := runQuiet(t, "--config", "../../deploy/systemd/loom.yaml", "--print-config", "--no-such-flag"); code != 2 {
		t.Fatalf("an unknown flag exited %d, want 2: the check above could not fail", code)
	}
}

// TestCommandLineMistakesExit2: every way of calling loomd wrongly exits
// 2, the code a supervisor or script reads as "fix the command line".
func TestCommandLineMistakesExit2(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--vni", "abc"}, {"-Z"}, {"completion"}, {"completion", "tcsh"}, {"wireguard-device", "x"}, {"help", "nosuch"}} {
		if code := runQuiet(t, args...); code != 2 {
			t.Errorf("loomd %q exited %d, want 2", args, code)
		}
	}
}

// TestPrintConfigRefusesABadValue: --print-config prints what it merged
// and exits 2 when loomd would refuse a value, so a file checked with it
// does not fail only at start.
func TestPrintConfigRefusesABadValue(t *testing.T) {
	for _, bad := range [][]string{{"--vni", "0"}, {"--mtu", "100"}, {"--gossip-key-file", ""}, {"--advertise-addr", "127.0.0.1"}} {
		args := append([]string{"--config", "../../deploy/systemd/loom.yaml", "--print-config"}, bad...)
		if code := runQuiet(t, args...); code != 2 {
			t.Errorf("loomd %v exited %d, want 2", args, code)
		}
	}
}

// runQuiet runs loomd with args, its standard output and error discarded,
// and returns its exit code.
func runQuiet(t *testing.T, args ...string) int {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = devnull, devnull
	defer func() { os.Stdout, os.Stderr = stdout, stderr }()
	return run(args)
}
