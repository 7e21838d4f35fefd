package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sotto-im/sotto/crypto"
	"github.com/sotto-im/sotto/relay/store"
)

// CreateBlob streams an attachment of exactly declared bytes into a new
// blob owned by owner, kept for BlobTTL. Errors match store.ErrTooLarge or
// store.ErrQuotaExceeded when a limit refuses it.
func (s *Server) CreateBlob(ctx context.Context, owner crypto.AccountID, declared int64, r io.Reader) (store.BlobID, error) {
	id, err := s.blobs.Create(ctx, owner, declared, s.cfg.Now().Add(s.cfg.BlobTTL), r)
	if err != nil {
		if !errors.Is(err, store.ErrTooLarge) && !errors.Is(err, store.ErrQuotaExceeded) && ctx.Err() == nil {
			s.log.Warn("relay: blob upload failed", "err", err)
		}
		return store.BlobID{}, fmt.Errorf("relay: create blob: %w", err)
	}
	s.m.blobsCreated.Inc()
	return id, nil
}

// OpenBlob opens a blob for download; knowing its ID is the capability.
// The error matches store.ErrNotFound if it is missing or expired.
func (s *Server) OpenBlob(ctx context.Context, id store.BlobID) (store.ReadSeekCloser, int64, error) {
	r, size, err := s.blobs.Open(ctx, id)
	if err != nil {
		return nil, 0, fmt.Errorf("relay: open blob: %w", err)
	}
	return r, size, nil
}
