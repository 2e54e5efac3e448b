package ingest

import "time"

// MayVouch is the license decision the service would take now, for tests
// that must wait until a change on the bus has arrived.
func (s *Service) MayVouch(uzi string, now time.Time) (bool, error) {
	return s.licenses.mayVouch(uzi, now)
}

// DecodeUpload is the upload decoder, for the fuzz target.
func DecodeUpload(b []byte) (canon []byte, err error) {
	d, err := decodeUpload(b)
	if err != nil {
		return nil, err
	}
	return d.canon, nil
}
