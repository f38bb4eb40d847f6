// Charts are Chart.js, registered piecemeal so only what is drawn is bundled. Every chart is
// followed by a table of its numbers (for screen readers and for reading exact values).
import {
  ArcElement,
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  type ChartConfiguration,
  DoughnutController,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js';
import { useEffect, useRef } from 'preact/hooks';

Chart.register(ArcElement, BarController, BarElement, CategoryScale, DoughnutController, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip);

const PALETTE = ['#1f4e8c', '#d9822b', '#2e8b57', '#b23a48', '#7b5ea7', '#3a9bb2', '#8c6d1f', '#5b6770', '#c2477f', '#4f7f2f'];

export function color(index: number): string {
  return PALETTE[index % PALETTE.length];
}

export interface Series {
  label: string;
  values: number[];
}

type Kind = 'bar' | 'stacked' | 'line' | 'doughnut';

/** A chart of `series` over `labels`; `label` names it for assistive technology. */
export function ChartView({ kind, labels, series, label, height = 260 }: { kind: Kind; labels: string[]; series: Series[]; label: string; height?: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const config = configuration(kind, labels, series);
    if (chart.current && (chart.current.config as { type?: string }).type === (config as { type?: string }).type) {
      chart.current.data = config.data;
      chart.current.options = config.options ?? {};
      chart.current.update();
    } else {
      chart.current?.destroy();
      chart.current = new Chart(canvas.current, config);
    }
  }, [kind, JSON.stringify(labels), JSON.stringify(series)]);
  useEffect(() => () => chart.current?.destroy(), []);
  return (
    <div class="chart" style={{ height: `${height}px` }}>
      <canvas ref={canvas} role="img" aria-label={label} />
    </div>
  );
}

function configuration(kind: Kind, labels: string[], series: Series[]): ChartConfiguration {
  const animation = matchMedia('(prefers-reduced-motion: reduce)').matches ? false : undefined;
  if (kind === 'doughnut') {
    return {
      type: 'doughnut',
      data: { labels, datasets: series.map((s) => ({ label: s.label, data: s.values, backgroundColor: labels.map((_, i) => color(i)) })) },
      options: { maintainAspectRatio: false, animation, plugins: { legend: { position: 'right' } } },
    };
  }
  const stacked = kind === 'stacked';
  return {
    type: kind === 'line' ? 'line' : 'bar',
    data: {
      labels,
      datasets: series.map((s, i) => ({
        label: s.label,
        data: s.values,
        backgroundColor: color(i),
        borderColor: color(i),
        pointRadius: kind === 'line' ? 2 : undefined,
        stepped: kind === 'line' ? ('before' as const) : undefined,
      })),
    },
    options: {
      maintainAspectRatio: false,
      animation,
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { display: series.length > 1, position: 'bottom' } },
      scales: { x: { stacked, ticks: { autoSkip: true, maxRotation: 0 } }, y: { stacked, beginAtZero: kind !== 'line' } },
    },
  };
}
