package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneclient"
)

// runUpload publishes the phone's keys with its bundle. Keys come from
// -keys when that file exists; otherwise -n random keys are made and
// written there first, so that sync can be told about them and a retry
// publishes the same keys.
func runUpload(ctx context.Context, args []string, stdout io.Writer) error {
	fset := newFlagSet("upload", stdout)
	keyFile := fset.String("key", "phone.key", "the phone's key file")
	api := fset.String("api", "http://127.0.0.1:8081", "the phone API's base URL")
	bundleFile := fset.String("bundle", "bundle.bin", "the bundle pickup saved")
	keysFile := fset.String("keys", "keys.txt", "keys to publish; made (-n of them) when the file does not exist")
	n := fset.Int("n", 14, "how many random keys to make, one a day for the days before today")
	timeout := fset.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fset.Parse(args); err != nil {
		return err
	}
	priv, err := readKey(*keyFile)
	if err != nil {
		return err
	}
	bundle, err := os.ReadFile(*bundleFile)
	if err != nil {
		return err
	}
	keys, err := readKeys(*keysFile)
	if errors.Is(err, fs.ErrNotExist) {
		if *n < 1 || *n > exposure.MaxKeysPerUpload {
			return fmt.Errorf("-n must be 1..%d", exposure.MaxKeysPerUpload)
		}
		if keys, err = randomKeys(*n, time.Now()); err != nil {
			return err
		}
		// Written before the upload: keys that may be published are never
		// unknown to the phone that sent them.
		if err := writeKeys(*keysFile, keys); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := phoneclient.New(*api).Upload(ctx, priv, bundle, keys)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "OK  %d keys %s (listed in %s)\n", len(keys), resp.Status, *keysFile)
	return nil
}
