import { render } from 'preact';
import { Shell, SessionContext, SignIn, useRoute, useSessionState } from './app';
import './styles.css';
import { LeadPage } from './views/lead';
import { Leads } from './views/leads';
import { Operations } from './views/operations';
import { Overview } from './views/overview';
import { Reports } from './views/reports';
import { Rules } from './views/rules';
import { Upload } from './views/upload';

function App() {
  const session = useSessionState();
  const route = useRoute();
  const signedIn = Boolean(session.keys.read || session.keys.ingest);
  return (
    <SessionContext.Provider value={session}>
      {signedIn ? (
        <Shell route={route}>
          <View route={route} />
        </Shell>
      ) : (
        <SignIn />
      )}
    </SessionContext.Provider>
  );
}

function View({ route }: { route: string[] }) {
  switch (route[0] ?? 'overview') {
    case 'overview':
      return <Overview />;
    case 'leads':
      return route[1] ? <LeadPage leadId={route[1]} /> : <Leads />;
    case 'reports':
      return <Reports tab={route[1]} />;
    case 'rules':
      return <Rules />;
    case 'upload':
      return <Upload />;
    case 'operations':
      return <Operations />;
    default:
      return (
        <div class="card">
          <h1>Not found</h1>
          <p>
            There is no view here. <a href="#/overview">Go to the overview</a>.
          </p>
        </div>
      );
  }
}

const root = document.getElementById('app');
if (root) {
  root.textContent = '';
  render(<App />, root);
}
