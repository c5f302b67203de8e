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
