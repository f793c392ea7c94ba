// The "work" of the personas: deterministic text processing, no LLM, no network.
// Same input, same output, every run — so the demo can check every answer it gets.

const FILLERS = ['very', 'really', 'just', 'quite', 'actually']
const MAX_WORDS = 24

/** aria's draft: one paragraph per beat, with the habits of a hurried first draft left in. */
export function draftParagraph (topic, index) {
  const beats = [
    `Every night the keeper climbed the the stairs to listen for ${topic}.`,
    `She was really very sure that the signals were just echoes of ships that had never come home, and she wrote each one down in a ledger that was already quite full, and she never told anyone in the village about it.`,
    `At dawn the last signal answered her, and the sea was actually calm.`,
    `The ledger stayed on the lamp room table for whoever came after.`,
    `Nobody in the village ever asked her what she had heard.`
  ]
  return beats[index % beats.length]
}

export function sentences (text) {
  return text.split(/(?<=[.!?])\s+/).map(s => s.trim()).filter(s => s !== '')
}

/** kira's review: filler words, doubled words, sentences too long to read aloud. */
export function review (text) {
  const notes = []
  sentences(text).forEach((sentence, i) => {
    const words = sentence.toLowerCase().match(/[a-z']+/g) ?? []
    for (const filler of FILLERS) {
      if (words.includes(filler)) notes.push({ sentence: i, kind: 'filler', word: filler, suggestion: `drop "${filler}"` })
    }
    for (let w = 1; w < words.length; w++) {
      if (words[w] === words[w - 1]) notes.push({ sentence: i, kind: 'doubled', word: words[w], suggestion: `"${words[w]} ${words[w]}" -> "${words[w]}"` })
    }
    if (words.length > MAX_WORDS) notes.push({ sentence: i, kind: 'long', words: words.length, suggestion: `split (${words.length} words > ${MAX_WORDS})` })
  })
  return { notes, score: Math.max(0, 100 - 10 * notes.length) }
}

/** aria's revision: apply each note; returns the new text and how many notes it applied. */
export function revise (text, notes) {
  let applied = 0
  const out = sentences(text).map((sentence, i) => {
    let s = sentence
    for (const note of notes.filter(n => n.sentence === i)) {
      const before = s
      if (note.kind === 'filler') s = s.replace(new RegExp(`\\b${note.word}\\s+`, 'i'), '')
      if (note.kind === 'doubled') s = s.replace(new RegExp(`\\b(${note.word})\\s+\\1\\b`, 'i'), '$1')
      if (note.kind === 'long') s = s.replace(/, and (\w)/, (_m, c) => `. ${c.toUpperCase()}`)
      if (s !== before) applied++
    }
    return s
  })
  return { text: out.join(' '), applied }
}

/** kira's analyze_code tool: a few honest metrics of a snippet. */
export function analyzeCode ({ code, language = 'js' }) {
  const lines = code.split('\n')
  const comment = language === 'py' ? /^\s*#/ : /^\s*\/\//
  const fn = language === 'py' ? /^\s*def\s+\w+/ : /\bfunction\b|=>/
  let depth = 0
  let maxNesting = 0
  for (const ch of code) {
    if (ch === '{') maxNesting = Math.max(maxNesting, ++depth)
    if (ch === '}') depth--
  }
  const todos = lines.filter(l => /\b(TODO|FIXME)\b/.test(l)).length
  const longestLine = Math.max(...lines.map(l => l.length))
  const warnings = []
  if (todos > 0) warnings.push(`${todos} TODO/FIXME left`)
  if (maxNesting > 3) warnings.push(`nesting depth ${maxNesting} > 3`)
  if (longestLine > 100) warnings.push(`a line of ${longestLine} chars`)
  return {
    language,
    lines: lines.length,
    codeLines: lines.filter(l => l.trim() !== '' && !comment.test(l)).length,
    comments: lines.filter(l => comment.test(l)).length,
    functions: lines.filter(l => fn.test(l)).length,
    todos,
    maxNesting,
    longestLine,
    warnings
  }
}
