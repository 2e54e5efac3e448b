package backoffice

// auditTrailRoutes are the lines of the route table for the audit trail's pages (auditor, admin).
func (s *Service) auditTrailRoutes() []route {
	return nil
}
