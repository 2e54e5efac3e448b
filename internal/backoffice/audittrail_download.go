package backoffice

// Downloads of the filtered trail: CSV or JSON (internal/audit's formats),
// streamed from the database as they are read, and their detached
// signature by the attestation key. A download is pinned to the head the
// page showed (upto), so that the file and its signature, fetched apart,
// hold the same rows; `vouch audit verify-download` checks them. Every
// download and every signature fetched is an audit row of its own, written
// before the first byte goes out: a download whose row cannot be written
// is refused.

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
)

// downloadFlushRows is how many rows go out between flushes; each flush
// also moves the write deadline on, so that a year of rows is not cut by
// the listener's write timeout while it keeps moving.
const downloadFlushRows = 1000

// downloadStall is how long one batch of rows may take to go out.
const downloadStall = 30 * time.Second

// downloadQuery reads a download's filter and pins it: without upto the
// answer is a redirect to the same download pinned to the head now.
func (s *Service) downloadQuery(c echo.Context) (trailQuery, bool, error) {
	q, refusal := s.parseTrail(c, "upto", "format")
	if refusal != nil {
		return q, false, s.refuseTrail(c, "audit", q, refusal)
	}
	head, err := audit.Head(c.Request().Context(), s.deps.DB.Pool())
	if err != nil {
		return q, false, err
	}
	switch {
	case q.UpTo == 0 && head > 0:
		q.UpTo = head
		return q, false, c.Redirect(http.StatusSeeOther, q.link(c.Path(), "format", q.Format))
	case q.UpTo == 0, q.UpTo > head: // nothing to pin, or a row not written yet
		return q, false, s.refuseTrail(c, "audit", q, errTrailUpTo)
	}
	return q, true, nil
}

// recordDownload writes the download's audit row; the download goes out
// only once it is written.
func (s *Service) recordDownload(c echo.Context, action string, q trailQuery) error {
	e := entry(c, action, "")
	e.Subject = q.Format
	detail, _ := json.Marshal(map[string]any{"format": q.Format, "filter": q.filterString(), "upto": q.UpTo})
	e.Detail = string(detail)
	ctx := c.Request().Context()
	return s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		_, err := audit.Append(ctx, tx, e, s.now())
		return err
	})
}

// downloadName is the file's name: the head it is pinned to.
func downloadName(q trailQuery) string {
	return "vouch-audit-upto-" + strconv.FormatInt(q.UpTo, 10) + "." + q.Format
}

// writeTrail writes the rows of q in its format to w as they are read,
// calling flush every downloadFlushRows rows; it returns how many.
func (s *Service) writeTrail(ctx context.Context, w io.Writer, q trailQuery, flush func() error) (int64, error) {
	enc, err := audit.NewEncoder(w, q.Format, audit.Meta{UpTo: q.UpTo, Filter: q.filterString()})
	if err != nil {
		return 0, err
	}
	err = audit.Each(ctx, s.deps.DB.Pool(), q.Filter, func(r audit.Row) error {
		if err := enc.Write(r); err != nil {
			return err
		}
		if flush != nil && enc.Rows()%downloadFlushRows == 0 {
			if err := enc.Flush(); err != nil {
				return err
			}
			return flush()
		}
		return nil
	})
	if err != nil {
		return enc.Rows(), err
	}
	return enc.Rows(), enc.Close()
}

// auditDownload is GET /audit-download?format=csv|json&<filter>&upto=N:
// the rows of the filter up to row N, streamed.
func (s *Service) auditDownload(c echo.Context) error {
	q, ok, err := s.downloadQuery(c)
	if !ok {
		return err
	}
	if err := s.recordDownload(c, ActionAuditDownload, q); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, map[string]string{audit.FormatCSV: "text/csv; charset=utf-8", audit.FormatJSON: echo.MIMEApplicationJSON}[q.Format])
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", downloadName(q)))
	h.Set("Cache-Control", "no-store")
	c.Response().WriteHeader(http.StatusOK)
	rc := http.NewResponseController(c.Response().Writer)
	flush := func() error {
		_ = rc.SetWriteDeadline(time.Now().Add(downloadStall)) // not every writer has one
		c.Response().Flush()
		return nil
	}
	_ = flush()
	if _, err := s.writeTrail(c.Request().Context(), c.Response(), q, flush); err != nil {
		// The status went out: break the connection rather than end a
		// file that looks whole (its signature would not verify either).
		s.deps.Log.Error("audit trail: download cut short", "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// auditSignature is GET /audit-signature?format=csv|json&<filter>&upto=N:
// the download's detached signature, made by reading the same rows again
// into SHA-256 and signing the statement with the attestation key.
func (s *Service) auditSignature(c echo.Context) error {
	q, ok, err := s.downloadQuery(c)
	if !ok {
		return err
	}
	if err := s.recordDownload(c, ActionAuditSignature, q); err != nil {
		return err
	}
	ctx := c.Request().Context()
	sum := sha256.New()
	n, err := s.writeTrail(ctx, sum, q, nil)
	if err != nil {
		return err
	}
	st := audit.Statement{Format: q.Format, Rows: n, UpTo: q.UpTo, Filter: q.filterString()}
	copy(st.SHA256[:], sum.Sum(nil))
	sig, err := s.signDownload(ctx, st)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", downloadName(q)+".sig"))
	h.Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, sig)
}

// signDownload signs st on an HSM session no other request is using.
func (s *Service) signDownload(ctx context.Context, st audit.Statement) ([]byte, error) {
	var signer crypto.Signer
	select {
	case signer = <-s.signers:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { s.signers <- signer }()
	sig, err := audit.SignDownload(signer, st)
	if err != nil {
		return nil, fmt.Errorf("backoffice: sign download: %w", err)
	}
	return sig, nil
}
