package backoffice

import "net/http"

// settingsRoutes are the lines of the route table for the settings (admin)
// and the per-card quota view (auditor, so admin too: a card at its quota
// day after day is an auditor's to follow up; changing the quota is an
// admin's).
func (s *Service) settingsRoutes() []route {
	return []route{
		{http.MethodGet, "/settings", roleAdmin, s.settingsPage, "nav.settings"},
		{http.MethodPost, "/settings", roleAdmin, s.changeSetting, ""},
		{http.MethodGet, "/quota", roleAuditor, s.quotaPage, "nav.quota"},
	}
}
