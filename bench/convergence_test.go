package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomnet/loom/internal/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLoggedAtReadsLoomdLog: the crash figure's "declared dead" time is
// read from a log written by loomd's own logger; the last matching line
// about that node wins, other nodes' lines and lines that are not JSON are
// passed over, and a missing line is an error naming what was sought.
func TestLoggedAtReadsLoomdLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loomd.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// loomd logs to stderr; zap takes the file behind it when the logger
	// is built.
	stderr := os.Stderr
	os.Stderr = f
	log, err := logging.New(zapcore.InfoLevel, "json")
	os.Stderr = stderr
	if err != nil {
		t.Fatal(err)
	}
	log.Info("peer dead", zap.String("node", "n3"))
	f.WriteString("panic: not a JSON line\n")
	// An earlier death of a node by the same name (it came back since).
	f.WriteString(`{"level":"info","ts":"2001-01-01T00:00:00.000Z","msg":"peer dead","node":"n2"}` + "\n")
	before := time.Now().Truncate(time.Millisecond)
	log.Info("peer dead", zap.String("node", "n2"))
	after := time.Now()
	log.Info("peer dead", zap.String("node", "n1"))
	log.Info("peer joined", zap.String("node", "n2"))
	log.Sync()
	f.Close()

	at, err := loggedAt(path, "peer dead", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before) || at.After(after) {
		t.Errorf("n2 declared dead at %s, want between %s and %s", at, before, after)
	}
	_, err = loggedAt(path, "peer dead", "n4")
	if err == nil || !strings.Contains(err.Error(), `no "peer dead" about n4`) {
		t.Errorf("no line about n4: got %v", err)
	}
}
