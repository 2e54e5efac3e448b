package backoffice

import "net/http"

// auditTrailRoutes are the lines of the route table for the audit trail's pages (auditor, admin).
func (s *Service) auditTrailRoutes() []route {
	return []route{
		{http.MethodGet, "/audit", roleAuditor, s.auditTrailPage, "nav.audit"},
		{http.MethodGet, "/audit-row", roleAuditor, s.auditRowPage, ""},
		{http.MethodGet, "/audit-verify", roleAuditor, s.auditVerifyPage, ""},
		{http.MethodPost, "/audit-verify", roleAuditor, s.startAuditVerify, ""},
		{http.MethodGet, "/audit-verify/status", roleAuditor, s.auditVerifyStatus, ""},
		{http.MethodGet, "/audit-download", roleAuditor, s.auditDownload, ""},
		{http.MethodGet, "/audit-signature", roleAuditor, s.auditSignature, ""},
	}
}
