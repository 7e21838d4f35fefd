package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sotto-im/sotto/crypto"
)

// serverKeys are the secrets sottod creates on first start and keeps in
// <data>/keys, each in its own file readable only by its owner.
type serverKeys struct {
	// token signs device JWTs (key server); its public half is in the JWKS.
	token ed25519.PrivateKey
	// previousToken, if present, is a rotated-out token key still
	// published until the tokens it signed have expired.
	previousToken ed25519.PrivateKey
	// certSigner signs sender certificates; clients pin its public half.
	certSigner *crypto.CertificateSigner
	// internal authenticates the key server's purge requests to a relay
	// in another process. Both processes must hold the same value.
	internal []byte
}

const (
	tokenKeyFile         = "token.key"
	previousTokenKeyFile = "token.previous.key"
	certKeyFile          = "sender-certificate.key"
	internalKeyFile      = "internal.key"
)

// loadOrCreateKeys reads the server keys from dir, creating the missing
// ones. The internal key may come from the environment instead
// (SOTTO_INTERNAL_KEY, base64) so that two processes can share it.
func loadOrCreateKeys(dir string, internalFromEnv string) (*serverKeys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sottod: keys directory: %w", err)
	}
	var k serverKeys
	seed, err := loadOrCreateSecret(filepath.Join(dir, tokenKeyFile), true)
	if err != nil {
		return nil, err
	}
	k.token = ed25519.NewKeyFromSeed(seed)
	if prev, err := loadOrCreateSecret(filepath.Join(dir, previousTokenKeyFile), false); err == nil {
		k.previousToken = ed25519.NewKeyFromSeed(prev)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if seed, err = loadOrCreateSecret(filepath.Join(dir, certKeyFile), true); err != nil {
		return nil, err
	}
	if k.certSigner, err = crypto.NewCertificateSigner(seed); err != nil {
		return nil, err
	}
	if internalFromEnv != "" {
		k.internal, err = base64.StdEncoding.DecodeString(internalFromEnv)
		if err != nil || len(k.internal) < 32 {
			return nil, usagef("SOTTO_INTERNAL_KEY must be at least 32 bytes in base64")
		}
	} else if k.internal, err = loadOrCreateSecret(filepath.Join(dir, internalKeyFile), true); err != nil {
		return nil, err
	}
	return &k, nil
}

// loadOrCreateSecret reads a 32-byte secret stored as base64 text, or, if
// create is set and the file is missing, makes a new one with mode 0600.
func loadOrCreateSecret(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(secret) != 32 {
			return nil, fmt.Errorf("sottod: %s is not a 32-byte base64 secret", filepath.Base(path))
		}
		return secret, nil
	}
	if !errors.Is(err, fs.ErrNotExist) || !create {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sottod: creating %s: %w", filepath.Base(path), err)
	}
	if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(secret)); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return secret, f.Close()
}

// tokenPublics returns the public keys that verify device tokens: the
// current one and, after a rotation, the previous one.
func (k *serverKeys) tokenPublics() []ed25519.PublicKey {
	out := []ed25519.PublicKey{k.token.Public().(ed25519.PublicKey)}
	if k.previousToken != nil {
		out = append(out, k.previousToken.Public().(ed25519.PublicKey))
	}
	return out
}
