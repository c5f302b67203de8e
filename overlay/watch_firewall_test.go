package overlay

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel names the thread that committed an nftables generation, not
// the process: any of this process's threads is its own change (else the
// agent would rewrite its table after every write of its own, in a loop).
func TestOwnThreadKnowsEveryThreadOfThisProcess(t *testing.T) {
	if !ownThread(uint32(unix.Gettid())) || !ownThread(uint32(os.Getpid())) {
		t.Fatal("this thread or the main thread not recognised as this process's")
	}
	if ownThread(0) || ownThread(1<<30) {
		t.Fatal("no thread or a thread that does not exist recognised as this process's")
	}
}
