// Package logging builds the zap loggers of Loom's long-running programs
// (loomd and its helpers) alike, so their lines interleave in one log
// with the same fields and time format.
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ParseLevel parses debug, info, warn or error.
func ParseLevel(s string) (zapcore.Level, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// CheckFormat accepts json (for machines) and console (for people).
func CheckFormat(format string) error {
	if format != "json" && format != "console" {
		return fmt.Errorf("%q: want json or console", format)
	}
	return nil
}

// New builds a logger; level and format must have passed ParseLevel and
// CheckFormat.
func New(level zapcore.Level, format string) (*zap.Logger, error) {
	if err := CheckFormat(format); err != nil {
		return nil, err
	}
	cfg := zap.NewProductionConfig()
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.Development = false
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.DisableStacktrace = true
	cfg.Sampling = nil
	return cfg.Build()
}
