package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWireGuardKeyIsMadeOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	k1, err := loadWireGuardKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, wireGuardKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	if k2, err := loadWireGuardKey(dir); err != nil || k2 != k1 {
		t.Fatalf("second load gave another key (%v)", err)
	}
	k3, err := makeWireGuardKey(dir)
	if err != nil || k3 == k1 {
		t.Fatalf("rotation kept the key (%v)", err)
	}
	if k4, _ := loadWireGuardKey(dir); k4 != k3 {
		t.Fatal("the rotated key was not stored")
	}
	os.WriteFile(filepath.Join(dir, wireGuardKeyFile), []byte("not a key\n"), 0o600)
	if _, err := loadWireGuardKey(dir); err == nil || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("corrupt key: err = %v", err)
	}
}
