// Command sotto is a terminal messenger for Sotto, in the spirit of
// signal-cli: short commands, one JSON object per line for scripts, a
// JSON-RPC daemon, and an interactive chat view. It is built on package
// client; every account lives in an encrypted store under the home
// directory.
//
// Run "sotto --help" or "sotto COMMAND --help" for the usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

const usage = `Usage:
  sotto [--home DIR] [--json] COMMAND [flags] [args]

Commands:
  register --server URL [--handle NAME] [--trust-root TEXT]
                                 create an account on a sottod server
  whoami [--qr]                  show account ID, device, handle and invite link
  contacts add (LINK | @handle) [--name NAME]
  contacts list
  contacts block ID | contacts unblock ID
  send TO [TEXT]                 send a message (TEXT from stdin when omitted)
  receive [--timeout D] [--follow]
                                 print received messages, receipts and events
  chat TO                        interactive full-screen conversation
  history TO [--before T] [--after T] [--limit N]
  search TEXT [--limit N]
  groups create NAME --member X [--member X...]
  groups add NAME X... | remove NAME X... | leave NAME | rename NAME NEW
  groups list | groups info NAME
  verify TO [--mark-verified]    show the safety number of a contact
  devices list | devices remove ID
  link --server URL | link --accept CODE add a device to the account
  passphrase change
  export FILE | import FILE --server URL encrypted backup and restore
  daemon [--socket PATH | --http ADDR]   JSON-RPC 2.0 daemon

TO is @handle, a contact name, an account ID, or group:NAME.

Global flags:
  --home DIR   account directory (default $SOTTO_HOME, else the user's
               config directory followed by /sotto)
  --json       machine-readable output: one JSON object per line

Environment:
  SOTTO_HOME            default for --home
  SOTTO_PASSPHRASE      the store passphrase; without it sotto prompts
                        (without echo) when stdin is a terminal, and fails
                        otherwise
  SOTTO_NEW_PASSPHRASE  the new passphrase for "passphrase change"
  SOTTO_BACKUP_PASSPHRASE  the passphrase of export and import files
  SOTTO_SERVER          default for --server

Exit codes:
  0  success
  1  error
  2  usage error
  3  network error (server unreachable, or the relay did not accept in time)
  4  rate limited by the server
  5  untrusted identity change (a contact's keys changed)
  6  not found (contact, group, message or account)

Output is plain text without colour or progress animation unless stdout is
a terminal. Errors print as "sotto: error: ..." with "sotto: hint: ..."
lines where one helps.

Example:
  $ export SOTTO_HOME=~/.sotto-alice SOTTO_PASSPHRASE=...
  $ sotto register --server https://sotto.example.org --handle alice
  $ sotto contacts add @bob --name Bob
  $ sotto send Bob "see you at eight"
  $ echo "from a script" | sotto --json send @bob
  $ sotto --json receive --timeout 10s
  $ sotto chat Bob
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
