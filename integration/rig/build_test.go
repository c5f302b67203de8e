package rig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaceReportsFindsTheDetectorsReport(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	clean := write("clean.log", "{\"level\":\"info\",\"msg\":\"ready\"}\n")
	if got := RaceReports(clean); got != "" {
		t.Errorf("a log without races reported %q", got)
	}
	if got := RaceReports(filepath.Join(dir, "missing.log")); got != "" {
		t.Errorf("a missing log reported %q", got)
	}
	var b strings.Builder
	b.WriteString("{\"level\":\"info\",\"msg\":\"ready\"}\n==================\n")
	b.WriteString(RaceReport + "\nWrite at 0x00c000123456 by goroutine 7:\n")
	for range 100 {
		b.WriteString("  frame\n")
	}
	got := RaceReports(write("raced.log", b.String()))
	if !strings.HasPrefix(got, RaceReport+"\nWrite at") {
		t.Errorf("report does not start at the detector's line: %q", got[:min(len(got), 80)])
	}
	if n := strings.Count(got, "\n") + 1; n != 60 {
		t.Errorf("report has %d lines, want the first 60", n)
	}
}
