package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Online backup.
//
// A Pebble database can only be opened by one process, so a backup is taken
// by the running server: `sottod backup OUT` connects to the admin socket
// <data>/admin.sock (a Unix socket only the data directory's owner can reach)
// and asks for a copy into OUT. The server writes a Pebble checkpoint of each
// of its databases (a consistent point-in-time copy made of hard links where
// the filesystem allows), copies the blob files and the server keys, and
// answers when all is synced. Every message whose sender was told
// "accepted" before the request reached the server is in the copy.
//
// `sottod restore BACKUP DIR` copies a backup into an empty data directory;
// starting sottod with --data DIR then serves it.

const adminSocketName = "admin.sock"

// checkpointer is implemented by the stores that can copy themselves while
// serving.
type checkpointer interface {
	Checkpoint(destDir string) error
}

// backupTarget is one thing a backup copies: a database by checkpoint, or a
// directory of files by copy.
type backupTarget struct {
	name string       // directory name inside the backup
	db   checkpointer // set for databases
	dir  string       // set for plain directories (blobs, keys)
}

// serveAdmin answers backup requests on the admin socket until ctx ends.
func serveAdmin(ctx context.Context, dataDir string, targets []backupTarget, logger *slog.Logger) (func(), error) {
	path := filepath.Join(dataDir, adminSocketName)
	os.Remove(path) // a stale socket from a killed process
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	mux := http.NewServeMux()
	// POST /backup?dest=DIR - copy everything into the new directory DIR
	mux.HandleFunc("POST /backup", func(w http.ResponseWriter, r *http.Request) {
		dest := r.URL.Query().Get("dest")
		start := time.Now()
		if err := takeBackup(dest, targets); err != nil {
			logger.Error("backup failed", "err", err)
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		logger.Info("backup taken", "duration", time.Since(start))
		json.NewEncoder(w).Encode(map[string]string{"dest": dest})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close(); os.Remove(path) }, nil
}

func takeBackup(dest string, targets []backupTarget) error {
	if dest == "" || !filepath.IsAbs(dest) {
		return errors.New("backup destination must be an absolute path")
	}
	if _, err := os.Stat(dest); err == nil {
		return fmt.Errorf("backup destination %s already exists", dest)
	}
	if err := os.MkdirAll(dest, 0o700); err != nil {
		return err
	}
	for _, t := range targets {
		out := filepath.Join(dest, t.name)
		switch {
		case t.db != nil:
			if err := t.db.Checkpoint(out); err != nil {
				return fmt.Errorf("checkpoint %s: %w", t.name, err)
			}
		case t.dir != "":
			if err := copyTree(t.dir, out); err != nil {
				return fmt.Errorf("copy %s: %w", t.name, err)
			}
		}
	}
	return os.WriteFile(filepath.Join(dest, "BACKUP"), []byte("sottod backup "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
}

// copyTree copies regular files from src to dst, syncing each. A missing
// src is an empty tree.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == src {
			return os.MkdirAll(dst, 0o700)
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil // sockets, temporary upload files
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runBackup is `sottod backup [--data DIR] OUT`.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sottod backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := getenv(envName("data"))
	if def == "" {
		def = "sotto-data"
	}
	dataDir := fs.String("data", def, "data directory of the running server ("+envName("data")+")")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "sottod: error: usage: sottod backup [--data DIR] OUT")
		return exitConfig
	}
	dest, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "sottod: error: %v\n", err)
		return exitConfig
	}
	sock := filepath.Join(*dataDir, adminSocketName)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://sottod/backup?dest="+url.QueryEscape(dest), nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "sottod: error: cannot reach the running server at %s: %v\n", sock, err)
		fmt.Fprintln(stderr, "sottod: hint: backup asks a running sottod; for a stopped one, copy the data directory")
		return exitError
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "sottod: error: backup failed: %s\n", body["error"])
		return exitError
	}
	fmt.Fprintf(stdout, "backup written to %s\n", dest)
	return exitOK
}

// runRestore is `sottod restore BACKUP DIR`: it copies a backup into an
// empty (or missing) data directory.
func runRestore(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintln(stderr, "sottod: error: usage: sottod restore BACKUP DIR")
		return exitConfig
	}
	src, dst := args[0], args[1]
	if _, err := os.Stat(filepath.Join(src, "BACKUP")); err != nil {
		fmt.Fprintf(stderr, "sottod: error: %s is not a sottod backup (no BACKUP file)\n", src)
		return exitConfig
	}
	if entries, err := os.ReadDir(dst); err == nil && len(entries) > 0 {
		fmt.Fprintf(stderr, "sottod: error: %s is not empty; restore only into an empty directory\n", dst)
		return exitConfig
	}
	if err := copyTree(src, dst); err != nil {
		fmt.Fprintf(stderr, "sottod: error: restore: %v\n", err)
		return exitError
	}
	os.Remove(filepath.Join(dst, "BACKUP"))
	fmt.Fprintf(stdout, "restored %s into %s; start sottod with --data %s\n", src, dst, dst)
	return exitOK
}
