// What the panel says about a model's training: the run's state and epoch while it runs, and when it ends, its
// figures and whether its weights are now served (or why not), or why it failed. `task` is GET /train/'s last run,
// `stats` the model's /info train_stats.

export function trainingText(task, stats = {}) {
  if (!task) return { line: 'No training yet.', failure: '', outcome: '' };
  const progress = task.status === 'RUNNING' && stats.total_epochs ? ` epoch ${stats.epoch ?? 0} / ${stats.total_epochs}` : '';
  const line = `${task.request?.model || ''} ${task.status}${progress}`.trim();
  const failure = !['RUNNING', 'DONE'].includes(task.status)
    ? (task.details || []).slice(-3).join(' ') || stats.error || 'see the server log' : '';
  const dice = stats.last?.mean_dice != null ? stats.last.mean_dice.toFixed(3) : '-';
  const served = stats.published_file ? 'the new weights are served.'
    : `not published: ${stats.not_published_reason || 'no improvement'}.`;
  const outcome = task.status === 'DONE' && stats.status === 'DONE'
    ? `Last run: ${stats.epoch ?? '?'} epoch(s) on ${stats.training_ids?.length ?? '?'} image(s), validation Dice ${dice}; ${served}`
    : '';
  return { line, failure, outcome };
}
