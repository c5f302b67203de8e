package main

import (
	"os"
	"testing"
)

// TestShippedConfigFilesLoad: the example configuration the systemd unit
// starts loomd with is read as loomd reads it, so a flag renamed or
// dropped fails here rather than on a host at boot.
func TestShippedConfigFilesLoad(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	stdout := os.Stdout
	os.Stdout = devnull
	code := run([]string{"--config", "../../deploy/systemd/loom.yaml", "--print-config"})
	os.Stdout = stdout
	if code != 0 {
		t.Fatalf("loomd --config deploy/systemd/loom.yaml --print-config exited %d", code)
	}
	if code := run([]string{"--config", "../../deploy/systemd/loom.yaml", "--print-config", "--no-such-flag"}); code != 2 {
		t.Fatalf("an unknown flag exited %d, want 2: the check above could not fail", code)
	}
}
