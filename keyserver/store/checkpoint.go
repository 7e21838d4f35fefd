package store

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a consistent copy of the database into destDir, which
// must not exist, while the database keeps serving (sottod backup).
func (s *DB) Checkpoint(destDir string) error {
	if err := s.enter(context.Background()); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	defer s.leave()
	if err := s.db.Checkpoint(destDir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	return nil
}
