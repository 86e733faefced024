"""Patient plans: deterministic per patient, longitudinal, every site used."""

from medtune.config import Anatomy, Finding, Prevalence, SynthConfig
from medtune.synth.patient import truncate
from medtune.synth.plan import bone_density, plan_patient
from medtune.synth.sites import SITE_SYNTAX_CYCLE, make_sites

CONFIG = SynthConfig(patients=300, sites=5, seed=3, anatomies=[Anatomy.CHEST])
SITES = make_sites(CONFIG)
PLANS = [plan_patient(CONFIG, SITES, i) for i in range(CONFIG.patients)]


def test_a_patient_plan_depends_only_on_seed_and_index():
    assert plan_patient(CONFIG, SITES, 17) == PLANS[17]
    other = CONFIG.model_copy(update={"seed": 4})
    assert plan_patient(other, make_sites(other), 17) != PLANS[17]


def test_studies_are_in_time_order_and_within_the_years():
    for plan in PLANS:
        dates = [s.when for s in plan.studies]
        assert dates == sorted(dates)
        assert all(CONFIG.first_year <= d.year <= CONFIG.last_year for d in dates)
        assert all(plan.age_at(d) >= 18 for d in dates)
    assert sum(len(p.studies) > 1 for p in PLANS) > 50  # longitudinal patients exist
    assert any(p.age_at(p.studies[0].when) > 89 for p in PLANS)  # ages HIPAA groups later


def test_identifiers_are_unique_across_the_cohort():
    mrns = [p.mrn for p in PLANS]
    accessions = [s.accession for p in PLANS for s in p.studies]
    assert len(set(mrns)) == len(mrns)
    assert len(set(accessions)) == len(accessions)


def test_every_site_gets_patients_and_sites_differ():
    assert {p.site for p in PLANS} == set(range(CONFIG.sites))
    assert [s.syntax for s in SITES] == list(SITE_SYNTAX_CYCLE)
    assert len({s.room.vendor.manufacturer for s in SITES}) == CONFIG.sites
    assert any(s.burns_in_text for s in SITES) and not all(s.burns_in_text for s in SITES)


def test_chronic_findings_persist_in_the_same_place():
    persisted = 0
    for plan in PLANS:
        for earlier, later in zip(plan.studies, plan.studies[1:], strict=False):
            before, after = earlier.finding_map, later.finding_map
            if Finding.CARDIOMEGALY in before and Finding.CARDIOMEGALY in after:
                persisted += before[Finding.CARDIOMEGALY] == after[Finding.CARDIOMEGALY]
    assert persisted > 3


def test_prevalence_follows_the_config():
    none = CONFIG.model_copy(update={"prevalence": Prevalence(nodule=0.0)})
    plans = [plan_patient(none, SITES, i) for i in range(100)]
    assert not any(Finding.NODULE in s.finding_map for p in plans for s in p.studies)


def test_bone_density_falls_with_age_more_in_women():
    woman = next(p for p in PLANS if p.sex == "F")
    man = next(p for p in PLANS if p.sex == "M")
    assert bone_density(woman, 80) < bone_density(woman, 40)
    assert bone_density(woman, 80) / bone_density(woman, 40) < (
        bone_density(man, 80) / bone_density(man, 40)
    )


def test_truncate_keeps_whole_studies_first():
    plan = max(PLANS, key=lambda p: p.n_images)
    cut = truncate(plan, 3)
    assert cut.n_images == 3
    assert cut.studies[0] == plan.studies[0] or len(plan.studies[0].images) > 3
