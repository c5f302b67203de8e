package agent

import (
	"github.com/loomnet/loom/internal/logging"
	"go.uber.org/zap"
)

// NewLogger builds the agent's logger: JSON for machines by default,
// console for people.
func NewLogger(level, format string) (*zap.Logger, error) {
	lvl, err := logging.ParseLevel(level)
	if err != nil {
		return nil, &FlagError{Flag: "log-level", Err: err}
	}
	if err := logging.CheckFormat(format); err != nil {
		return nil, &FlagError{Flag: "log-format", Err: err}
	}
	return logging.New(lvl, format)
}

// newFailure reports whether err is a failure other than prev, the last
// one: a failure that repeats on every attempt is logged once, and again
// only when it changes.
func newFailure(prev, err error) bool {
	return err != nil && (prev == nil || prev.Error() != err.Error())
}
