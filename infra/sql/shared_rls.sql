-- Row-level security of the shared SQL tables (PostgreSQL only).
-- Applied by `visitshare db apply`, which first creates the tables, one role per partner of
-- infra/partners.yaml, the GRANTs each partner's access level allows, and fills
-- shared_partner_scopes (role → municipality_code it may read at town level; '*' = all).
-- Idempotent: every statement can run again.
--
-- Town-level tables: a partner sees the rows of the municipalities in its scope.
-- Municipality-level tables and `releases`: granted to every partner, no row filter.
-- police_repeat_victimization: granted to the police role only (no policy needed).

ALTER TABLE shared_outcomes_town_month ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS partner_scope ON shared_outcomes_town_month;
CREATE POLICY partner_scope ON shared_outcomes_town_month FOR SELECT
  USING (EXISTS (
    SELECT 1 FROM shared_partner_scopes s
    WHERE s.role_name = current_user
      AND (s.municipality_code = '*'
           OR s.municipality_code = shared_outcomes_town_month.municipality_code)));

ALTER TABLE shared_before_after_town ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS partner_scope ON shared_before_after_town;
CREATE POLICY partner_scope ON shared_before_after_town FOR SELECT
  USING (EXISTS (
    SELECT 1 FROM shared_partner_scopes s
    WHERE s.role_name = current_user
      AND (s.municipality_code = '*'
           OR s.municipality_code = shared_before_after_town.municipality_code)));
