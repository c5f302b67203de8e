package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirNames lists dir, so a test sees a temporary file left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func checkFile(t *testing.T, path, want string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("%s holds %q, want %q", path, b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Fatalf("%s has mode %v, want %v", path, fi.Mode().Perm(), perm)
	}
}

func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := WriteFile(path, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "one\n", 0o600)
	// Replacing takes the new mode too: a plugin installed over a
	// non-executable file must end up executable.
	if err := Write(path, strings.NewReader("two\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "two\n", 0o755)
	if names := dirNames(t, dir); len(names) != 1 || names[0] != "key" {
		t.Fatalf("directory holds %v, want only key", names)
	}
}

// failingReader yields some bytes, then fails, as a copy from a file on
// a failing disk would.
type failingReader struct{ sent bool }

var errRead = errors.New("read failed")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.sent {
		return 0, errRead
	}
	r.sent = true
	return copy(p, "half"), nil
}

func TestFailedWriteLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-loom.conflist")
	if err := WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(path, &failingReader{}, 0o644)
	if !errors.Is(err, errRead) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Write with a failing reader: %v, want the read error naming %s", err, path)
	}
	checkFile(t, path, "old", 0o644)
	if names := dirNames(t, dir); len(names) != 1 {
		t.Fatalf("directory holds %v, want the old file alone", names)
	}
}

func TestWriteIntoAMissingDirectoryFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent", "key")
	err := WriteFile(path, []byte("x"), 0o600)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("write into a missing directory: %v, want an error naming %s", err, path)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the directory was made: %v", err)
	}
}
