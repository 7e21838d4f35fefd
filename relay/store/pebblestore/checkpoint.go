package pebblestore

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a consistent copy of the database into destDir, which
// must not exist, while the database keeps serving (sottod backup). Every
// Put acknowledged before the call is in the copy: Puts are acknowledged
// only after their WAL sync, and the checkpoint flushes the WAL it copies.
func (d *DB) Checkpoint(destDir string) error {
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	if d.closeMu.closed {
		return fmt.Errorf("pebblestore: checkpoint: %w", pebble.ErrClosed)
	}
	if err := d.pdb.Checkpoint(destDir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("pebblestore: checkpoint: %w", err)
	}
	return nil
}
