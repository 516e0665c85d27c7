//! Placeholder: the runbook's CloudWatch Logs Insights queries, run over the
//! binary's real log output. Being written.

pub async fn runbook_queries_count_what_the_binary_logged() -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}

pub async fn the_dead_letter_query_finds_each_parked_message(_moto: String) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
